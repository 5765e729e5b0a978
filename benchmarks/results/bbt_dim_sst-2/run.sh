#!/bin/bash
# BBT intrinsic dimension 500 (config) vs 100, seed 0, on 16-13 and 16-21; two at a time
one() { split=$1; dim=$2; d=runs/bbtdim/d$dim/$split/bbt__s0; [ -f $d/result.json ] && return
  .venv/bin/python -m rlprompt.train --config configs/sst2_compare.yaml --run-dir $d --set task.seed=$split --set "seeds=[0]" --set "methods=[bbt]" --set bbt.intrinsic_dim=$dim --set dtype=bfloat16 --set threads_per_run=1 --executor local --quiet > runs/bbtdim.$split.$dim.log 2>&1; }
mkdir -p runs/bbtdim
one 16-13 500 & one 16-13 100 & wait
one 16-21 500 & one 16-21 100 & wait
