#!/bin/bash
# AG News, development split 16-13, seeds 0-1, bf16, two runs at a time: RL's reward on 32 of the 64 training
# examples (shipped) or all 64 (as search scores), then the search reference.
cd "$(dirname "$0")/../../.."  # the repository root
mkdir -p runs
one() {  # run name, then its settings
  local name=$1; shift
  .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/$name \
    --set task.name=agnews --set task.seed=16-13 --set task.test_examples=2000 --set dtype=bfloat16 \
    --set threads_per_run=1 --executor local --quiet "$@" > runs/$name.log 2>&1
}
for S in 0 1; do
  one ag13_e32_s$S --set "seeds=[$S]" --set "methods=[rl]" --set env.examples_per_reward=32 &
  one ag13_e64_s$S --set "seeds=[$S]" --set "methods=[rl]" --set env.examples_per_reward=64 &
  wait
done
one ag13_search_s0 --set "seeds=[0]" --set "methods=[search]" &
one ag13_search_s1 --set "seeds=[1]" --set "methods=[search]" &
wait
