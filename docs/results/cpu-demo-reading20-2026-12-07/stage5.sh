#!/bin/bash
# Waits for stages 1-4 (stages14.sh), then stage 5 with the seventeenth round's styles (index-styles), then the shipped stage-5 recipe (index-readF).
cd /work/main
while ! grep -q "STAGES14 DONE" /work/exp/stages14.log; do sleep 20; done
R=/work/exp/runs2
RD="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
S5="--steps 1000 $RD --recipe read_share=0.5 --recipe passage_neighbours=true --config copy_neighbour_bag=true --config retrieved_len=128 --config inference_query_tokens=96 --config inference_first_copy_bias=3.5 --config inference_first_candidates=5"
date; .venv/bin/retro train --preset demo --index /work/exp/index-styles --device cpu --out $R/s5-styles --init-from $R/demo-stage4 $S5
date; echo STYLES DONE
.venv/bin/retro train --preset demo --index /work/exp/index-readF --device cpu --out $R/s5-ctrl --init-from $R/demo-stage4 $S5
date; echo CTRL DONE
