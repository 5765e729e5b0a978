#!/bin/bash
# AG News, development splits 16-13 and 16-21, seeds 0-2, bf16, one thread a run, two runs at a time: RL as
# shipped against RL with the log-likelihood reward (env.reward=loglik), on one machine in one session.
cd "$(dirname "$0")/../../.."  # the repository root
mkdir -p runs
one() {  # run name, data split, then its settings
  local name=$1 split=$2; shift 2
  OMP_NUM_THREADS=1 .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir runs/$name \
    --set task.name=agnews --set task.seed=$split --set task.test_examples=2000 --set dtype=bfloat16 \
    --set threads_per_run=1 --executor local --quiet --set "methods=[rl]" "$@" > runs/$name.log 2>&1
}
for SPLIT in 13 21; do
  for S in 0 1 2; do
    one ag${SPLIT}_gap_s$S 16-$SPLIT --set "seeds=[$S]" &
    one ag${SPLIT}_loglik_s$S 16-$SPLIT --set "seeds=[$S]" --set env.reward=loglik &
    wait
  done
done
# Then search, whose training reward is env.reward too, on the same splits and seeds: as shipped and loglik.
for SPLIT in 13 21; do
  for S in 0 1 2; do
    one ag${SPLIT}_search_gap_s$S 16-$SPLIT --set "seeds=[$S]" --set "methods=[search]" &
    one ag${SPLIT}_search_loglik_s$S 16-$SPLIT --set "seeds=[$S]" --set "methods=[search]" --set env.reward=loglik &
    wait
  done
done
# Then RL on MR and CR (their screened label words), development split 16-13, seeds 0-2: as shipped and loglik.
for TASK in mr cr; do
  if [ $TASK = mr ]; then WORDS="[negative, positive]"; else WORDS="[bad, great]"; fi
  for S in 0 1 2; do
    one ${TASK}13_gap_s$S 16-13 --set task.name=$TASK --set "task.verbalizers=$WORDS" --set "seeds=[$S]" &
    one ${TASK}13_loglik_s$S 16-13 --set task.name=$TASK --set "task.verbalizers=$WORDS" --set "seeds=[$S]" \
      --set env.reward=loglik &
    wait
  done
done
