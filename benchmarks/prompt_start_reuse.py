"""Kept prompt starts (the Scorer reusing the keys/values of scored prompts' first tokens) against scoring
every prompt token, on the same model, data, prompt stream and process.

A settled RL policy (or a search's mutations) writes new prompts that differ from ones already scored in
a token or two. This replays such a stream: each call scores ``--batch`` new prompts on the 32 SST-2
training sentences (as RL's reward does), each a copy of the current best prompt with one position
replaced; every ``--drift`` calls the best moves to one of them. A second stream of unrelated random
prompts (nothing to share) shows what the bookkeeping costs when nothing is reused.

    .venv/bin/python benchmarks/prompt_start_reuse.py [--model smollm2-135m] [--calls 24]

Prints, per stream, the time with reuse off and on (the same calls, alternating which goes first), the
ratio, the share of prompt tokens reused and the largest difference in label log-probs (float noise
only: the same computation in differently shaped batches).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rlprompt.evaluation import make_scorer
from rlprompt.models import load_model
from rlprompt.tasks import load_task
from rlprompt.vocab import action_vocabulary


def settled_stream(vocab, calls: int, batch: int, length: int, drift: int, rng) -> list[list[tuple]]:
    best = tuple(rng.choice(vocab, length))
    stream = []
    for call in range(calls):
        prompts = []
        for _ in range(batch):
            p = list(best)
            p[rng.integers(length)] = rng.choice(vocab)
            prompts.append(tuple(int(t) for t in p))
        stream.append(prompts)
        if (call + 1) % drift == 0:
            best = prompts[0]
    return stream


def random_stream(vocab, calls: int, batch: int, length: int, rng) -> list[list[tuple]]:
    return [[tuple(int(t) for t in rng.choice(vocab, length)) for _ in range(batch)] for _ in range(calls)]


def replay(lm, task, train, stream, reuse_mb: float, length: int):
    scorer = make_scorer(lm, task, prompt_budget=length, prompt_prefix_cache_mb=reuse_mb)
    scorer.score([stream[0][0][:1]], train)  # the sentences' prefixes cached first, as in a run
    start = time.perf_counter()
    out = np.stack([scorer.score(prompts, train) for prompts in stream])
    return time.perf_counter() - start, out, scorer.stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--batch", type=int, default=16, help="new prompts per call")
    parser.add_argument("--length", type=int, default=5, help="prompt tokens")
    parser.add_argument("--drift", type=int, default=4, help="calls between moves of the best prompt")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    lm = load_model(args.model, "cpu", "float32")  # the README's figures are float32's on any CPU
    task = load_task("sst-2")
    train = task.examples("train")
    vocab = np.array(action_vocabulary(lm, "frequent", 1000))
    rng = np.random.default_rng(0)
    streams = {
        "settled (one token changed)": settled_stream(
            vocab, args.calls, args.batch, args.length, args.drift, rng
        ),
        "random (nothing shared)": random_stream(vocab, args.calls, args.batch, args.length, rng),
    }
    print(f"{args.model}, torch threads {torch.get_num_threads()}, {args.calls} calls x {args.batch} prompts "
          f"x {len(train)} sentences")  # fmt: skip
    for name, stream in streams.items():
        times = {0.0: [], 256.0: []}
        outs, stats = {}, {}
        for r in range(args.repeats):
            for mb in (0.0, 256.0) if r % 2 == 0 else (256.0, 0.0):
                seconds, outs[mb], stats[mb] = replay(lm, task, train, stream, mb, args.length)
                times[mb].append(seconds)
        off, on = min(times[0.0]), min(times[256.0])
        tokens = stats[256.0].tokens_processed + stats[256.0].prompt_tokens_reused
        share = stats[256.0].prompt_tokens_reused / max(1, tokens)
        print(f"{name}: reuse off {off:.1f} s, on {on:.1f} s: {off / on:.2f}x; suffix tokens reused "
              f"{share:.0%}; max |difference| {np.abs(outs[0.0] - outs[256.0]).max():.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
