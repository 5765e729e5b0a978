"""The budget preview: what a run will cost before it starts (``--dry-run`` prints it and writes nothing).

Reward queries are (prompt, example) pairs scored; LM tokens are what the task LM reads. Speed is measured
on this machine by a short probe (a few random prompts scored on the training examples, cold and warm),
so the time is this machine's. Each method module estimates its own cost (``estimate`` in the registry);
gradient methods share :func:`gradient_estimate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlprompt.methods.base import Estimate

GRADIENT_FACTOR = 3.0  # a forward and backward pass against a forward one
PROBE_PROMPTS = 8  # random prompts the speed probe scores on each example, cold and then warm


@dataclass
class Sizes:
    """What a method's estimate needs to know of the task: examples per split, dev evaluations, and the
    cost of the test evaluation: each test example's sentence prefix is computed once, then each prompt's
    tokens run behind it (the empty prompt needs nothing more than the prefix)."""

    train: int
    dev: int
    test: int
    evaluations: int
    test_prefix_seconds: float  # per test example
    test_pair_seconds: float  # per (prompt, test example) behind a computed prefix

    def test_seconds(self, prompts: int) -> float:
        """The test evaluation of ``prompts`` prompts besides the empty one."""
        return self.test * (self.test_prefix_seconds + prompts * self.test_pair_seconds)


@dataclass
class MethodPlan:
    method: str
    seeds: int
    reward_queries: int  # estimated, per seed
    reward_queries_max: int  # upper bound, per seed
    lm_tokens: int  # estimated, per seed
    seconds: float  # estimated wall time per seed, training and test evaluation

    def line(self) -> str:
        bound = ""
        if self.reward_queries_max != self.reward_queries:
            bound = f" (at most {self.reward_queries_max:,})"
        tokens = f"~{self.lm_tokens / 1e3:,.0f}k LM tokens"
        return (f"{self.method}: ~{self.reward_queries:,} reward queries{bound}, {tokens}, "
                f"~{_minutes(self.seconds)} per seed x {self.seeds}")  # fmt: skip


@dataclass
class Speed:
    cold: float  # pairs/s with the sentences' prefixes computed in the call
    warm: float  # pairs/s once they are cached, as in training
    tokens_per_pair: float
    # pairs/s when each pair is computed whole, nothing shared with another prompt: the gradient methods that
    # change the model (or, for prefix tuning, what every layer reads) compute each sequence so
    full: float | None = None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def probe_speed(
    scorer, examples, vocab_size: int, prompt_length: int, seed: int = 0, whole: bool = False
) -> Speed:
    """Score ``PROBE_PROMPTS`` random prompts on ``examples`` with a fresh scorer (cold), then as many others
    (warm); with
    ``whole`` (see :func:`needs_whole_speed`) also every example computed whole, once."""
    rng = np.random.default_rng(seed)
    ids = scorer.lm.encode(" the movie was a very good and bad story of")
    pool = sorted(set(ids)) or list(range(min(vocab_size, 100)))

    def prompts():
        return [tuple(int(t) for t in rng.choice(pool, size=prompt_length)) for _ in range(PROBE_PROMPTS)]

    tokens = scorer.stats.tokens_processed
    start = time.perf_counter()
    scorer.score(prompts(), examples)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    scorer.score(prompts(), examples)
    warm = time.perf_counter() - start
    pairs = PROBE_PROMPTS * len(examples)
    full = None
    if whole and hasattr(scorer, "evaluate_logprobs"):  # a local model: the gradient methods' case
        start = time.perf_counter()
        scorer.evaluate_logprobs(examples, reuse_prefix=False)
        full = len(examples) / (time.perf_counter() - start)
    return Speed(pairs / cold, pairs / warm, (scorer.stats.tokens_processed - tokens) / (2 * pairs), full)


def needs_whole_speed(config) -> bool:
    """Whether a method of the run is priced by :func:`gradient_estimate` (the only user of ``Speed.full``):
    the probe's whole-sequence pass costs start-up time only then."""
    from rlprompt.registry import METHODS

    return any(METHODS[m].estimate is None for m in config.method_list)


def plan_run(config, task, speed: Speed) -> list[MethodPlan]:
    """Per method, the estimated cost of one seed: the method module's ``estimate`` (named in the registry),
    or the gradient methods' default."""
    import importlib

    from rlprompt.registry import METHODS

    dev, test = (len(task.examples(s)) for s in ("dev", "test"))
    # what the methods train on (task.exclude_train left out), less each seed's demonstrations
    train = max(1, len(task.training_examples(config.task.exclude_train)) - config.task.demonstrations)
    # The probe's prompts on each example, computing its prefix (cold) and behind the cached one (warm).
    prefix_seconds = max(0.0, PROBE_PROMPTS / speed.cold - PROBE_PROMPTS / speed.warm)
    sizes = Sizes(train, dev, test, config.evaluations + 1, prefix_seconds, 1 / speed.warm)
    plans = []
    for method in config.method_list:
        spec = METHODS[method]
        if spec.estimate is not None:
            module, function = spec.estimate.split(":")
            estimate = getattr(importlib.import_module(module), function)(method, config, sizes, speed)
        else:
            estimate = gradient_estimate(method, config, sizes, speed)
        tokens = int(estimate.reward_queries * speed.tokens_per_pair)
        plans.append(MethodPlan(method, len(config.seed_list), int(estimate.reward_queries),
                                int(estimate.reward_queries_max), tokens, estimate.seconds))  # fmt: skip
    return plans


def gradient_estimate(method: str, config, sizes: Sizes, speed: Speed) -> Estimate:
    """A gradient method: its steps' batches forward and backward, the dev evaluations, the test evaluation
    and the forgetting perplexity on the held-out sentences.

    Only the soft prompt, at the template's slot after the sentence, reuses the frozen model's sentence
    prefixes; the others compute every sequence whole (``speed.full``)."""
    section = getattr(config, method)
    examples = section.steps * section.batch_size
    queries = examples + sizes.evaluations * sizes.dev
    rate = speed.cold if method == "soft_prompt" or speed.full is None else speed.full
    whole = speed.full or speed.cold
    seconds = (
        examples / rate * GRADIENT_FACTOR
        + sizes.evaluations * sizes.dev / rate
        + sizes.test / rate
        + config.heldout_sentences / whole
    )
    return Estimate(queries, queries, seconds)


def format_plan(plans: list[MethodPlan], speed: Speed, config=None, splits: int = 1, where: str = "") -> str:
    """The plan's lines; ``where`` names the task LM's placement (e.g. ``smollm2-135m on cpu, bfloat16``:
    dtype auto depends on the machine). With ``config``: ``executor: ray`` runs ``ray.num_cpus //
    threads_per_run`` runs at a time here, each on ``threads_per_run`` threads (assumed to cost time in
    inverse proportion to the threads the speed was probed with); on a Ray cluster (``ray.address``) the
    plan is the runs' sum at this machine's speed; ``splits`` data splits
    (``task.seeds``) multiply the grid."""
    import os

    import torch

    from rlprompt.executors import ray_address

    total = sum(p.seconds * p.seeds for p in plans)
    runs = sum(p.seeds for p in plans) * splits
    how = "on this machine"
    probed_with = torch.get_num_threads()
    cluster = ray_address(config) if config is not None and config.executor == "ray" else None
    if config is not None and config.executor == "ray" and cluster is None and runs > 1:
        threads = config.threads_per_run or 1
        cpus = config.ray.num_cpus or os.cpu_count() or 1
        at_once = min(runs, max(1, cpus // threads))
        total *= probed_with / threads / at_once
        how = f"on this machine, {at_once} run(s) at a time of {threads} thread(s) each (Ray)"
    elif cluster is not None:
        # The cluster's machines and how many runs it takes at once are unknown here: the sum of the runs.
        threads = config.threads_per_run or 1
        total *= probed_with / threads
        how = (f"summed over runs of {threads} thread(s) each at this machine's speed (the Ray cluster "
               f"{cluster} may run them side by side, in less wall time)")  # fmt: skip
    elif config is not None and config.threads_per_run:
        total *= probed_with / config.threads_per_run
    if splits > 1:
        how += f", {splits} data splits"
        total *= splits
    whole = f", {speed.full:.0f} whole" if speed.full else ""
    where = f"{where}; " if where else ""
    lines = [f"plan: ~{_minutes(total)} in all {how} ({where}scoring {speed.warm:.0f} pairs/s warm, "
             f"{speed.cold:.0f} cold{whole})"]  # fmt: skip
    lines += ["  " + p.line() for p in plans]
    return "\n".join(lines)
