"""Two Scorer shortcuts against the plain path they replace, on the same model, data and process.

1. **A generation of soft prompts in one call** (black-box tuning's population): ``evaluate_soft_prompts``
   packs every candidate behind each training sentence's cached prefix, against one
   ``evaluate_logprobs`` call per candidate (each a batch of the sentences behind their prefixes).
2. **A shared template start computed once** (in-context demonstrations): the demonstrations' keys and
   values are computed once and each test sentence continues from them, against computing every
   sentence's whole head (demonstrations included), as the Scorer did before.

    .venv/bin/python benchmarks/scorer_packing.py [--model smollm2-135m] [--population 20] [--test 300]

Prints each pair of times, their ratio and the largest difference in label log-probs (float noise only:
the same computation in differently shaped batches). Times are the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import rlprompt.backends.hf as hf
from rlprompt.evaluation import make_scorer
from rlprompt.models import load_model
from rlprompt.tasks import load_task
from rlprompt.templates import in_context_template


def best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--population", type=int, default=20, help="soft prompts per call (BBT's)")
    parser.add_argument("--tokens", type=int, default=5, help="virtual tokens per soft prompt")
    parser.add_argument("--test", type=int, default=300, help="test sentences for the in-context part")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    lm = load_model(args.model, "cpu", "float32")  # the README's figures are float32's on any CPU
    task = load_task("sst-2")
    train, test = task.examples("train"), task.examples("test")[: args.test]
    print(f"{args.model}, torch threads {torch.get_num_threads()}")

    scorer = make_scorer(lm, task, prompt_budget=args.tokens)
    embeddings = lm.model.get_input_embeddings().weight.detach()
    rng = np.random.default_rng(0)
    softs = embeddings[torch.from_numpy(rng.integers(0, 1000, (args.population, args.tokens)))].clone()
    scorer.evaluate_logprobs(train, softs[0])  # the sentences' prefixes cached for both, as in BBT
    one, separate = best_time(
        lambda: np.stack([scorer.evaluate_logprobs(train, s) for s in softs]), args.repeats
    )
    packed, together = best_time(lambda: scorer.evaluate_soft_prompts(train, softs), args.repeats)
    print(f"{args.population} soft prompts x {len(train)} train sentences: one call each {one:.2f} s, "
          f"one packed call {packed:.2f} s: {one / packed:.2f}x; "
          f"max |difference| {np.abs(separate - together).max():.1e}")  # fmt: skip

    template = in_context_template(
        task.template_for(lm.kind), lm.kind, train, task.verbalizers, "It was", 2, "\n", 0
    )

    def in_context(minimum: int):
        hf.SHARED_HEAD_MIN = minimum
        fresh = make_scorer(lm, task, template, prompt_budget=8)  # no cached prefixes
        return fresh.score(["It was"], test)[0]

    default = hf.SHARED_HEAD_MIN
    whole_s, whole = best_time(lambda: in_context(10**9), args.repeats)
    shared_s, shared = best_time(lambda: in_context(default), args.repeats)
    hf.SHARED_HEAD_MIN = default
    print(f"in-context (2 demonstrations) on {len(test)} test sentences: whole heads {whole_s:.1f} s, "
          f"shared start once {shared_s:.1f} s: {whole_s / shared_s:.2f}x; "
          f"max |difference| {np.abs(whole - shared).max():.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
