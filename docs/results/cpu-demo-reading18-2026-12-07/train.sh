#!/bin/bash
# usage: train.sh INDEX OUT SEED  (1,000 more steps of the shipped stage 5's recipe from models/demo)
cd /work/exp
OMP_NUM_THREADS=1 /work/main/.venv/bin/retro train --preset demo --index $1 --init-from /work/main/models/demo \
  --steps 1000 --config copy_bag_window=16 --batch-size 16 --lr ${LR:-1e-3} --warmup 50 --ckpt-every 100 \
  --recipe continuation_start=0.5 --recipe continuation_end=0.5 \
  --recipe read_prefix=reading-qa/,facts-qa/,reading-chat/ --recipe read_share=0.5 \
  --recipe passage_neighbours=true --config copy_neighbour_bag=true --config retrieved_len=128 \
  --config inference_query_tokens=96 --device cpu --seed $3 --out $2
