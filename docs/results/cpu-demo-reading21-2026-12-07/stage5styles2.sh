#!/bin/bash
# Round 21: the seventeenth round's styles (index-styles) in the shipped stage-5 recipe from the SHIPPED stage 4, seed 0
# (its twin: models/demo). Waits for stage5wiki2.sh.
cd /work/main
while ! grep -q "ALL DONE" /work/exp/stage5wiki2.log; do sleep 20; done
R=/work/exp/runs2
S4=/work/exp/stage4-shipped
RD="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
S5="--steps 1000 --recipe read_share=0.5 --recipe passage_neighbours=true --config copy_neighbour_bag=true --config retrieved_len=128 --config inference_query_tokens=96 --config inference_first_copy_bias=3.5 --config inference_first_candidates=5"
date; .venv/bin/retro train --preset demo --index /work/exp/index-styles --device cpu --out $R/st21-f0 --init-from $S4 --seed 0 $S5 $RD
date; echo "st21-f0 TRAINED"
.venv/bin/retro export $R/st21-f0 --out /work/exp/st21-f0 --dtype float32
cd /work/exp && PYTHONPATH=/work/main /work/main/.venv/bin/python /work/main/docs/results/cpu-demo-reading3-2026-12-03/reading_check.py index-serve dev st21-f0 --mode lexical-titled --dump r21/dev
cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/fresh_passages.py --model /work/exp/st21-f0 --index /work/exp/index-serve --data benchmarks/data/fresh_passages_dev.jsonl --variant 'served={}' --out /work/exp/r21/fdev-st21-f0.json
python3 /work/main/docs/results/cpu-demo-reading8-2026-12-06/paired.py /work/exp/r21/dev-st21-f0.json /work/exp/r19/dev-demo-fc5.json
date; echo STYLES DONE
