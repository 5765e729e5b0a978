#!/bin/bash
# AG News, development split 16-13: RL's reward on 32 of the 64 training examples (shipped) or all 64 (as search scores)
cd "$(dirname "$0")/../../.."  # the repository root
for S in 0 1; do
  for E in 32 64; do
    .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/ag13_e${E}_s$S \
      --set task.name=agnews --set task.seed=16-13 --set "seeds=[$S]" --set "methods=[rl]" \
      --set task.test_examples=2000 --set env.examples_per_reward=$E --set dtype=bfloat16 \
      --set threads_per_run=1 --executor local --quiet > runs/ag13_e${E}_s$S.log 2>&1 &
  done
  wait
done
# The search reference on the same split and seeds
for S in 0 1; do
  .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/ag13_search_s$S \
    --set task.name=agnews --set task.seed=16-13 --set "seeds=[$S]" --set "methods=[search]" \
    --set task.test_examples=2000 --set dtype=bfloat16 --set threads_per_run=1 --executor local --quiet \
    > runs/ag13_search_s$S.log 2>&1 &
done
wait
