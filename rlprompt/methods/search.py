"""Discrete search: the gradient-free baseline RL has to beat at the same reward-query budget.

A genetic search over the RL method's action vocabulary and prompt length, in the spirit of GrIPS's edit
search (Prasad et al., 2023) and EvoPrompt's genetic variant (Guo et al., 2024), on tokens instead of
LLM-written phrases: a population of prompts starts at random; each generation proposes as many children
(tournament-chosen parents, uniform crossover for ``search.crossover`` of them, then at least one token
replaced by a random vocabulary token), scores them with RL's training reward (the gap reward on the
training examples, calibrated as the run says) and keeps the best ``population`` of parents and children.
It writes as many prompts as RL (``total_timesteps / env.prompt_length``) and stops early once
``max_reward_queries`` (prompt, example) pairs are scored: a prompt proposed again is a cache hit and costs
nothing. Dev is scored at ``evaluations`` evenly spaced points, on the best prompts not yet seen there;
the best by dev accuracy (then dev reward) is exported and evaluated on test, as RL's. A checkpoint
after each dev evaluation (on a stop request, and once the search is over) holds the population, every
reward seen, the score cache and the sampler's state, so ``--resume`` continues the search an unbroken run
would have made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlprompt.checkpoint import StopAtOnce, save_checkpoint
from rlprompt.errors import RLPromptError
from rlprompt.kinds import classification
from rlprompt.methods.base import (
    Candidate,
    DevChoice,
    Estimate,
    EvalLog,
    MethodContext,
    MethodResult,
    PromptRule,
    tested_prompts,
)
from rlprompt.settings import at_least_one, within
from rlprompt.vocab import action_vocabulary, policy_model


@dataclass
class SearchConfig:
    """Evolutionary search over RL's action vocabulary and prompt length (rlprompt/methods/search.py): it
    writes as many prompts as RL (total_timesteps / env.prompt_length) unless max_reward_queries stops it."""

    population: int = 16  # prompts kept; each generation proposes as many children (RL's reward batch)
    crossover: float = 0.5  # share of children that mix two parents (uniform crossover) before mutating
    tournament: int = 2  # parents are the best of this many prompts drawn from the population
    # Which prompt the run chooses (as rl.prompt_rule): for search, the best by dev accuracy; the dev
    # reward's choice (top_3_dev_reward) scored 1.0 points less on AG News over 12 runs (README "Would
    # another rule choose better than dev accuracy?").
    prompt_rule: PromptRule = "dev_accuracy"

    def __post_init__(self) -> None:
        at_least_one("search", population=self.population, tournament=self.tournament)
        within("search", "crossover", self.crossover, 0, 1)


def uniform_crossover(a, b, rng) -> tuple[int, ...]:
    """A child of prompts ``a`` and ``b``: each position's token from ``b`` where a uniform draw is below 0.5,
    else from ``a``. Parents of different lengths (RL's prompts with the blank action) give a child as long
    as one of them, drawn; a position the drawn parent lacks takes the other's token, so every token stays
    at its position."""
    from_b = rng.random(max(len(a), len(b))) < 0.5
    length = len(a) if len(a) == len(b) else (len(b) if rng.random() < 0.5 else len(a))
    child = []
    for i in range(length):
        parent = b if from_b[i] else a
        child.append(int((parent if i < len(parent) else (a if parent is b else b))[i]))
    return tuple(child)


class GeneticSearch:
    """The population and its proposals; ``rewards(prompts) -> array`` scores a batch of prompts."""

    def __init__(self, vocab: np.ndarray, length: int, population: int, crossover: float, tournament: int,
                 seed: int):  # fmt: skip
        self.vocab, self.length, self.size = np.asarray(vocab), length, population
        self.crossover, self.tournament = crossover, tournament
        self.rng = np.random.default_rng(seed)
        self.members: list[tuple[int, ...]] = []
        self.scores: dict[tuple[int, ...], float] = {}  # every prompt scored so far -> its reward

    def random_prompts(self, n: int) -> list[tuple[int, ...]]:
        return [tuple(int(t) for t in self.rng.choice(self.vocab, size=self.length)) for _ in range(n)]

    def _parent(self) -> tuple[int, ...]:
        drawn = self.rng.choice(
            len(self.members), size=min(self.tournament, len(self.members)), replace=False
        )
        return max((self.members[i] for i in drawn), key=self.scores.__getitem__)

    def children(self) -> list[tuple[int, ...]]:
        """One generation's proposals: new prompts where possible (a repeat would be a wasted slot)."""
        out: list[tuple[int, ...]] = []
        for _ in range(self.size):
            for _attempt in range(20):
                child = self._parent()
                if self.rng.random() < self.crossover:
                    child = uniform_crossover(child, self._parent(), self.rng)
                child = np.array(child)
                flips = self.rng.random(self.length) < 1.0 / self.length
                flips[self.rng.integers(self.length)] = True  # at least one token changes
                child[flips] = self.rng.choice(self.vocab, size=int(flips.sum()))
                proposal = tuple(int(t) for t in child)
                if proposal not in self.scores and proposal not in out:
                    break
            out.append(proposal)
        return out

    def mean_reward(self) -> float:
        """The population's mean training reward (it never falls: the best prompts seen are kept)."""
        return float(np.mean([self.scores[p] for p in self.members]))

    def add(self, prompts: list[tuple[int, ...]], rewards: np.ndarray) -> None:
        """Record the rewards of ``prompts`` and keep the best ``population`` prompts seen so far."""
        for p, r in zip(prompts, rewards, strict=True):
            self.scores[p] = float(r)
        pool = list(dict.fromkeys([*self.members, *prompts]))
        self.members = sorted(pool, key=self.scores.__getitem__, reverse=True)[: self.size]

    def state(self) -> dict:
        scores = [[list(p), r] for p, r in self.scores.items()]
        return {
            "members": [list(p) for p in self.members],
            "scores": scores,
            "rng": self.rng.bit_generator.state,
        }

    def load(self, state: dict) -> None:
        self.members = [tuple(p) for p in state["members"]]
        self.scores = {tuple(p): r for p, r in state["scores"]}
        self.rng.bit_generator.state = state["rng"]


def run(ctx: MethodContext) -> MethodResult:
    """Search for a prompt; evaluate the best dev prompt (and the manual prompt) on test."""
    config, run_dir = ctx.config, ctx.run_dir
    # The same search space as RL: its policy's action vocabulary (the task LM's, unless a policy backbone
    # with another tokenizer is named), the same prompt length.
    vocab_lm = policy_model(config)
    vocab = action_vocabulary(vocab_lm, config.vocab.kind, config.vocab.size, config.vocab.tokens)
    objective = classification.objective(ctx, vocab_lm)  # the registry allows search on classification only
    search = GeneticSearch(vocab, config.env.prompt_length, config.search.population, config.search.crossover,
                           config.search.tournament, ctx.seed)  # fmt: skip
    resume = ctx.resume

    total_prompts = max(1, config.total_timesteps // config.env.prompt_length)
    budget = config.reward_query_budget("search")
    eval_points = ctx.eval_steps(total_prompts)  # in prompts written
    log = EvalLog(
        run_dir, total_prompts, f"search s{ctx.seed}", ctx.progress, resume["log"] if resume else None
    )
    dev = DevChoice(ctx, objective, "search", config.search.prompt_rule, resume)  # best, top, chosen prompt
    on_dev: set[tuple[int, ...]] = set()
    written, interrupted = 0, False

    def evaluate(step: int) -> None:
        fresh = [p for p in search.members if p not in on_dev][: config.candidates_per_eval]
        if not fresh:
            return
        on_dev.update(fresh)
        accuracy, reward = objective.dev(fresh)
        found = [Candidate(p, vocab_lm.decode(list(p)), float(a), float(r), step)
                 for p, a, r in zip(fresh, accuracy, reward, strict=True)]  # fmt: skip
        dev.add(found)  # exports the chosen prompt at once if it changed: a killed run keeps it
        best = dev.best
        log.record(step, max(c.dev_score for c in found), objective.stats.tokens_processed,
                   best_prompt=best.text, best_dev_reward=best.dev_reward,
                   train_reward=search.scores[search.members[0]], population_reward=search.mean_reward(),
                   reward_queries=int(objective.stats.pairs_scored))  # fmt: skip
        log.bar.set_postfix_str(f"best dev {best.dev_score:.3f} {best.text!r}")

    # The budget holds exactly: a batch is cut to what leaves room for one more dev evaluation. Costs in
    # pairs, the largest seen so far (calibrations other than batch score extra reference inputs).
    stats = objective.stats
    costs = {"prompt": len(objective.train), "dev": config.candidates_per_eval * len(objective.dev_examples)}

    def room() -> int:
        if not budget:
            return total_prompts
        return int((budget - stats.pairs_scored - costs["dev"]) // costs["prompt"])

    def score(prompts: list[tuple[int, ...]]) -> None:
        before = stats.pairs_scored
        search.add(prompts, objective.train_reward(prompts))
        costs["prompt"] = max(costs["prompt"], -(-(stats.pairs_scored - before) // len(prompts)))

    def evaluate_counted(step: int) -> None:
        before = stats.pairs_scored
        evaluate(step)
        costs["dev"] = max(costs["dev"], stats.pairs_scored - before)

    next_eval, last_checkpoint = 1, 0

    def checkpoint(finished: bool = False) -> None:
        nonlocal last_checkpoint
        save_checkpoint(run_dir, {
            "method": "search", "step": written, "finished": finished, "next_eval": next_eval,
            "search": search.state(),
            **dev.state(), "on_dev": [list(p) for p in on_dev],
            "costs": dict(costs), "log": log.state(written), "scores": objective.cached_scores(),
            "scorer_stats": (stats.pairs_scored, stats.tokens_processed),
        })  # fmt: skip
        last_checkpoint = written

    if resume:
        search.load(resume["search"])
        on_dev.update(tuple(p) for p in resume["on_dev"])
        costs.update(resume["costs"])
        objective.load_cached_scores(resume["scores"])
        stats.pairs_scored, stats.tokens_processed = resume["scorer_stats"]
        written, next_eval = resume["step"], resume["next_eval"]
        last_checkpoint = written
    try:
        try:
            if not resume:
                first = search.random_prompts(min(search.size, total_prompts, room()))
                if not first:
                    raise RLPromptError(
                        f"max_reward_queries={budget} leaves no room for one batch of prompts and a dev "
                        f"evaluation (about {costs['prompt'] + costs['dev']} pairs)"
                    )
                score(first)
                written = len(first)
                evaluate_counted(written)
            while written < total_prompts and not ctx.stop.requested:
                n = min(search.size, total_prompts - written, room())
                if n < 1:
                    break
                children = search.children()[:n]
                score(children)
                written += len(children)
                log.bar.update(written - log.bar.n)
                due = False
                while next_eval < len(eval_points) and written >= eval_points[next_eval]:
                    next_eval, due = next_eval + 1, True
                # The final evaluation's room stays reserved: one that would take it waits for the end.
                if due and (not budget or stats.pairs_scored + 2 * costs["dev"] <= budget):
                    evaluate_counted(written)
                evaluated_since = log.evaluated_since(last_checkpoint)
                if not ctx.stop.requested and ctx.checkpoint_due(written, last_checkpoint, evaluated_since):
                    checkpoint()
            interrupted = ctx.stop.requested and written < total_prompts
        except StopAtOnce:
            raise
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:
            if dev.best is not None:  # (none yet: the run stops with the --resume line)
                print(f"\nstopped after {written} prompts: evaluating the chosen prompt so far", flush=True)
            if log.curve:  # a search resumes from a scored population; before the first one, it starts again
                checkpoint()
        elif not (resume and resume.get("finished")):  # (a finished run's resume only tests)
            evaluate(written)  # the final population's best, if dev has not seen them
            checkpoint(finished=True)  # a run stopped during its test evaluation resumes there
    finally:
        log.close()
    if dev.best is None:
        raise KeyboardInterrupt  # stopped before the first evaluation: nothing to export
    return dev.finish(written, "prompts", log.elapsed, interrupted, log.curve)


def estimate(method: str, config, sizes, speed):
    """Every candidate is new: the bound is what it spends (rlprompt.plan)."""
    prompts = config.total_timesteps // config.env.prompt_length
    queries = prompts * sizes.train + sizes.evaluations * config.candidates_per_eval * sizes.dev
    budget = config.reward_query_budget(method)
    if budget:
        queries = min(queries, budget)
    return Estimate(queries, queries, queries / speed.warm + sizes.test_seconds(tested_prompts(config)))
