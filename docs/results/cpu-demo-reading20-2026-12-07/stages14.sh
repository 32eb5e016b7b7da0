#!/bin/bash
# Stages 1-4 of the documented demo recipe (service/cli/demo_stages.py TRAIN_RETRO_COMMANDS), on index-readF.
set -e
cd /work/main
R=/work/exp/runs2; I=/work/exp/index-readF
RD="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
T=".venv/bin/retro train --preset demo --index $I --device cpu"
date; $T --out $R/demo-stage1 --steps 3000 --batch-size 16 --lr 1.5e-3 --ckpt-every 100 --recipe continuation_end=0.5 --recipe decay_from=0.2 --recipe read_prefix=reading-qa/,facts-qa/
date; $T --out $R/demo-stage2 --init-from $R/demo-stage1 --steps 1000 $RD --recipe read_share=0.25
date; $T --out $R/demo-stage3 --init-from $R/demo-stage2 --steps 1500 $RD --recipe read_share=0.5
date; $T --out $R/demo-stage4 --init-from $R/demo-stage3 --steps 3000 $RD --recipe read_share=0.5
date; echo STAGES14 DONE
