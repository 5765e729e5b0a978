#!/bin/bash
# AG News, development splits 16-13, 16-21 and 16-42, seeds 0-2, bf16, one thread a run, two runs at a time:
# RL as shipped, RL with crossover in self-imitation (16-13), RL with 16 prompts per update, and search.
# 16-13's shipped-RL and search seeds 0-1 are in ../agnews_examples_per_reward/ (ag13_e32_s*, ag13_search_s*).
cd "$(dirname "$0")/../../.."  # the repository root
mkdir -p runs
one() {  # run name, data split, then its settings
  local name=$1 split=$2; shift 2
  .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/$name \
    --set task.name=agnews --set task.seed=$split --set task.test_examples=2000 --set dtype=bfloat16 \
    --set threads_per_run=1 --executor local --quiet "$@" > runs/$name.log 2>&1
}
one ag13_rl_s2 16-13 --set "seeds=[2]" --set "methods=[rl]" &
one ag13_search_s2 16-13 --set "seeds=[2]" --set "methods=[search]" &
wait
for S in 0 1 2; do
  one ag13_xo16_s$S 16-13 --set "seeds=[$S]" --set "methods=[rl]" --set rl.imitate_crossover=16 &
  one ag13_env16_s$S 16-13 --set "seeds=[$S]" --set "methods=[rl]" --set env.num_envs=16 &
  wait
done
for S in 0 1 2; do
  one ag21_rl_s$S 16-21 --set "seeds=[$S]" --set "methods=[rl]" &
  one ag21_search_s$S 16-21 --set "seeds=[$S]" --set "methods=[search]" &
  wait
  one ag21_env16_s$S 16-21 --set "seeds=[$S]" --set "methods=[rl]" --set env.num_envs=16
done
for S in 0 1 2; do  # a third development split, RL as shipped and search only
  one ag42_rl_s$S 16-42 --set "seeds=[$S]" --set "methods=[rl]" &
  one ag42_search_s$S 16-42 --set "seeds=[$S]" --set "methods=[search]" &
  wait
done
for S in 0 1 2; do  # a fourth development split (session 59), RL as shipped and search
  one ag87_rl_s$S 16-87 --set "seeds=[$S]" --set "methods=[rl]" &
  one ag87_search_s$S 16-87 --set "seeds=[$S]" --set "methods=[search]" &
  wait
done
