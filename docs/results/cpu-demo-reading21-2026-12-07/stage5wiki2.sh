#!/bin/bash
# Round 21: the shipped stage-5 recipe with wiki-qa:train from the SHIPPED stage 4 (models/demo of commit f294af3),
# seeds 0 and 1, and the shipped recipe's own seed-1 run (L1) as seed 1's twin (seed 0's twin is models/demo).
# Serial: each training alone, then its dev evaluation alone.
cd /work/main
R=/work/exp/runs2
S4=/work/exp/stage4-shipped
EV() {  # $1: exported model dir name under /work/exp
  cd /work/exp && PYTHONPATH=/work/main /work/main/.venv/bin/python /work/main/docs/results/cpu-demo-reading3-2026-12-03/reading_check.py index-serve dev $1 --mode lexical-titled --dump r21/dev
  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/fresh_passages.py --model /work/exp/$1 --index /work/exp/index-serve --data benchmarks/data/fresh_passages_dev.jsonl --variant 'served={}' --out /work/exp/r21/fdev-$1.json
}
RDW="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/,wiki-qa/"
RD="--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 --recipe continuation_start=0.5 --recipe continuation_end=0.5 --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
S5="--steps 1000 --recipe read_share=0.5 --recipe passage_neighbours=true --config copy_neighbour_bag=true --config retrieved_len=128 --config inference_query_tokens=96 --config inference_first_copy_bias=3.5 --config inference_first_candidates=5"
TR() {  # $1 out name, $2 index, $3 seed, rest: recipe
  local out=$1 index=$2 seed=$3; shift 3
  date; .venv/bin/retro train --preset demo --index /work/exp/$index --device cpu --out $R/$out --init-from $S4 --seed $seed $S5 "$@"
  date; echo "$out TRAINED"
  .venv/bin/retro export $R/$out --out /work/exp/$out --dtype float32
  EV $out
}
cd /work/exp && /work/main/.venv/bin/retro index build wiki-vital:train facts:train facts-qa:train facts-qa-para:train reading:train reading-qa:train reading-qa-forms:train reading-chat:train reading-qa-para:train wiki-qa:train --out index-wiki --chunk-size 32 --tokenizer /work/main/models/demo --device cpu --reuse-embeddings index-readF && cd /work/main
TR w21-f0 index-wiki 0 $RDW
python3 /work/main/docs/results/cpu-demo-reading8-2026-12-06/paired.py /work/exp/r21/dev-w21-f0.json /work/exp/r19/dev-demo-fc5.json
date; echo F0 DONE
TR l21-f1 index-readF 1 $RD
TR w21-f1 index-wiki 1 $RDW
python3 /work/main/docs/results/cpu-demo-reading8-2026-12-06/paired.py /work/exp/r21/dev-w21-f1.json /work/exp/r21/dev-l21-f1.json
date; echo ALL DONE
