#!/bin/bash
# Round 21: the seventeenth round's styles (index-styles) in the shipped stage-5 recipe from the SHIPPED stage 4.
# Usage: stage5styles2.sh SEED TWIN_DUMP   (as run: 0 r19/dev-demo-fc5.json, then 1 r21/dev-l21-f1.json;
# seed 0 waited for stage5wiki2.sh to finish, seed 1 shared the cores with a CI run for 12 minutes)
SEED=$1 TWIN=$2 OUT=st21-f$1
cd /work/main
R=/work/exp/runs2
S4=/work/exp/stage4-shipped
RD="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
S5="--steps 1000 --recipe read_share=0.5 --recipe passage_neighbours=true --config copy_neighbour_bag=true --config retrieved_len=128 --config inference_query_tokens=96 --config inference_first_copy_bias=3.5 --config inference_first_candidates=5"
date; .venv/bin/retro train --preset demo --index /work/exp/index-styles --device cpu --out $R/$OUT --init-from $S4 --seed $SEED $S5 $RD
date; echo "$OUT TRAINED"
.venv/bin/retro export $R/$OUT --out /work/exp/$OUT --dtype float32
cd /work/exp && PYTHONPATH=/work/main /work/main/.venv/bin/python /work/main/docs/results/cpu-demo-reading3-2026-12-03/reading_check.py index-serve dev $OUT --mode lexical-titled --dump r21/dev
cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/fresh_passages.py --model /work/exp/$OUT --index /work/exp/index-serve --data benchmarks/data/fresh_passages_dev.jsonl --variant 'served={}' --out /work/exp/r21/fdev-$OUT.json
python3 /work/main/docs/results/cpu-demo-reading8-2026-12-06/paired.py /work/exp/r21/dev-$OUT.json /work/exp/$TWIN
date; echo "$OUT DONE"
