"""The budget preview: what a run will cost before it starts (``--dry-run`` prints it and writes nothing).

Reward queries are (prompt, example) pairs scored; LM tokens are what the task LM reads. Speed is measured
on this machine by a short probe (a few random prompts scored on the training examples, cold and warm),
so the time is this machine's. For RL the upper bound counts every prompt the policy writes on every
reward example; prompts written again cost nothing, and in the quickstart's runs (seeds 0-5, SST-2,
SmolLM2) 22-36% of that bound was new, so the estimate takes 30%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

RL_NEW_FRACTION = 0.30  # share of the RL upper bound that is new (measured on the quickstart, see above)
RL_POLICY_FACTOR = 1.9  # training wall time / scoring time in RL (the policy's own work; measured likewise)
GRADIENT_FACTOR = 3.0  # a forward and backward pass against a forward one


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


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def probe_speed(scorer, examples, vocab_size: int, prompt_length: int, seed: int = 0) -> Speed:
    """Score 8 random prompts on ``examples`` with a fresh scorer (cold), then 8 others (warm)."""
    rng = np.random.default_rng(seed)
    ids = scorer.lm.encode(" the movie was a very good and bad story of")
    pool = sorted(set(ids)) or list(range(min(vocab_size, 100)))

    def prompts():
        return [tuple(int(t) for t in rng.choice(pool, size=prompt_length)) for _ in range(8)]

    tokens = scorer.stats.tokens_processed
    start = time.perf_counter()
    scorer.score(prompts(), examples)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    scorer.score(prompts(), examples)
    warm = time.perf_counter() - start
    pairs = 8 * len(examples)
    return Speed(pairs / cold, pairs / warm, (scorer.stats.tokens_processed - tokens) / (2 * pairs))


def plan_run(config, task, speed: Speed) -> list[MethodPlan]:
    """Per method, the estimated cost of one seed."""
    train, dev, test = (len(task.examples(s)) for s in ("train", "dev", "test"))
    evaluations = config.evaluations + 1
    test_seconds = 2 * test / speed.cold  # the chosen prompt and the manual one (the empty one is cached)
    plans = []
    for method in config.method_list:
        if method == "rl":
            prompts = config.total_timesteps // config.env.prompt_length
            dev_pairs = evaluations * (1 + config.candidates_per_eval) * dev
            bound = prompts * min(config.env.examples_per_reward, train) + dev_pairs
            queries = int(RL_NEW_FRACTION * (bound - dev_pairs) + dev_pairs)
            budget = config.reward_query_budget("rl")
            if budget:
                queries, bound = min(queries, budget), min(bound, budget)
            seconds = queries / speed.warm * RL_POLICY_FACTOR + test_seconds
        elif method in ("search", "bbt"):  # every candidate is new: the bound is what it spends
            prompts = config.total_timesteps // config.env.prompt_length
            per_eval = (
                config.candidates_per_eval * dev if method == "search" else train + 2 * (dev + train + dev)
            )
            queries = bound = prompts * train + evaluations * per_eval
            budget = config.reward_query_budget(method)
            if budget:
                queries = bound = min(queries, budget)
            seconds = queries / speed.warm + test_seconds
        elif method in ("manual", "in_context"):
            candidates = len(config.manual_prompts) or 1
            queries = bound = candidates * dev
            context = 1 + config.in_context.k if method == "in_context" else 1
            seconds = (queries / speed.cold + test / speed.cold) * context
        else:
            section = getattr(config, method)
            queries = bound = section.steps * section.batch_size + evaluations * dev
            seconds = section.steps * section.batch_size / speed.cold * GRADIENT_FACTOR + test_seconds
            seconds += evaluations * dev / speed.cold
        plans.append(MethodPlan(method, len(config.seed_list), int(queries), int(bound),
                                int(queries * speed.tokens_per_pair), seconds))  # fmt: skip
    return plans


def format_plan(plans: list[MethodPlan], speed: Speed) -> str:
    total = sum(p.seconds * p.seeds for p in plans)
    lines = [f"plan: ~{_minutes(total)} in all on this machine (scoring {speed.warm:.0f} pairs/s warm, "
             f"{speed.cold:.0f} cold)"]  # fmt: skip
    lines += ["  " + p.line() for p in plans]
    return "\n".join(lines)
