#!/bin/bash
# AG News, development splits 16-13, 16-21 and 16-42, seeds 0-2: RL as shipped but with rl.elite_by: mean
# (bf16, one thread a run, two runs at a time). RL as shipped on the same splits and seeds:
# ../agnews_examples_per_reward/ag13_e32_s{0,1} and ../agnews_rl_levers/ag13_rl_s2, ag21_rl_s*, ag42_rl_s*.
cd "$(dirname "$0")/../../.."  # the repository root
mkdir -p runs
one() {  # run name, data split, seed
  .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/$1 \
    --set task.name=agnews --set task.seed=$2 --set task.test_examples=2000 --set dtype=bfloat16 \
    --set threads_per_run=1 --executor local --quiet --set "seeds=[$3]" --set "methods=[rl]" \
    --set rl.elite_by=mean > runs/$1.log 2>&1
}
for S in 0 1 2; do
  one ag13_mean_s$S 16-13 $S &
  one ag21_mean_s$S 16-21 $S &
  wait
  one ag42_mean_s$S 16-42 $S
done
