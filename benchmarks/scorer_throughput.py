"""Scorer throughput against a naive scorer, on the same prompts and SST-2 training sentences.

The naive scorer is how RLPrompt scores: for one prompt at a time, it runs the full text of every
example (sentence + prompt) through the model and reads the next-token logits at the last position.
The Scorer reuses each sentence's key/value cache across prompts and batches all pairs together.

    .venv/bin/python benchmarks/scorer_throughput.py [--model smollm2-135m] [--prompts 16] [--examples 32]

Both run in this one process on the same model; the reward cache never helps the Scorer here (every
timed call sees pairs it has not scored). "cold" counts computing the sentence prefixes inside the timed
call; "warm" is the steady state of RL training, where the same training sentences come back and their
prefixes are already cached.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rlprompt.backends.hf import Scorer
from rlprompt.models import load_model
from rlprompt.tasks import load_task

PROMPTS = [
    "It was", "All in all, the movie was", "Overall it was", "In summary:", "The film is", "I thought it was",
    "This review is", "Rating:", "My verdict:", "Simply put, it was", "The sentiment is", "Honestly it was",
    "Critics say it was", "In short", "The acting was", "Final answer:", "It felt", "Really", "Totally",
    "Frankly, the story was", "One word:", "Reviewers found it", "The plot was", "Watching it was",
]  # fmt: skip


def naive_scores(lm, template, verbalizer_ids, prompts, examples) -> np.ndarray:
    """One prompt at a time, full text of each example, right padding, logits at the last real token."""
    tok = lm.tokenizer
    out = np.zeros((len(prompts), len(examples), len(verbalizer_ids)), dtype=np.float32)
    with torch.inference_mode():
        for pi, prompt in enumerate(prompts):
            seqs = [
                lm.prefix_ids + lm.encode(template.fill_text(ex.text, prompt, "").rstrip()) for ex in examples
            ]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), lm.pad_id)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logits = lm.model(input_ids=ids, attention_mask=mask).logits
            last = mask.sum(1) - 1
            lp = torch.log_softmax(logits[torch.arange(len(seqs)), last], -1)
            out[pi] = lp[:, [v[0] for v in verbalizer_ids]].numpy()
    del tok
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    lm = load_model(args.model, "cpu", "float32")  # the README's figures are float32's on any CPU
    task = load_task("sst-2")
    examples = task.examples("train")[: args.examples]
    prompts = PROMPTS[: args.prompts]
    template = task.template_for(lm.kind)
    pairs = len(prompts) * len(examples)
    print(
        f"{args.model}: {len(prompts)} prompts x {len(examples)} SST-2 train sentences, "
        f"torch threads {torch.get_num_threads()}"
    )

    scorer = Scorer(lm, template, task.verbalizers)
    naive_scores(lm, scorer.template, scorer.encoder.verbalizer_ids, prompts[:1], examples[:2])  # warm-up

    naive_times, cold_times, warm_times = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        naive = naive_scores(lm, scorer.template, scorer.encoder.verbalizer_ids, prompts, examples)
        naive_times.append(time.perf_counter() - t)

        scorer = Scorer(lm, template, task.verbalizers)  # fresh: no reward cache, no prefix cache
        t = time.perf_counter()
        fast = scorer.score(prompts, examples)
        cold_times.append(time.perf_counter() - t)

        # Steady state: prefixes cached, reward cache emptied so every pair is really scored again.
        scorer._scores.clear()
        t = time.perf_counter()
        warm = scorer.score(prompts, examples)
        warm_times.append(time.perf_counter() - t)
        assert scorer.stats.prefix_hits >= len(examples)

    naive_rate = pairs / min(naive_times)
    cold_rate = pairs / min(cold_times)
    warm_rate = pairs / min(warm_times)
    diff = max(float(np.abs(naive - fast).max()), float(np.abs(naive - warm).max()))
    print(f"naive scorer      : {naive_rate:8.1f} prompt-example evaluations/s")
    print(f"Scorer (cold)     : {cold_rate:8.1f} /s   {cold_rate / naive_rate:5.1f}x naive")
    print(f"Scorer (warm)     : {warm_rate:8.1f} /s   {warm_rate / naive_rate:5.1f}x naive")
    print(f"max |label log-prob difference| : {diff:.2e}")


if __name__ == "__main__":
    main()
