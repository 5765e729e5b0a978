"""Black-Box Tuning (Sun et al., 2022): a soft prompt found by CMA-ES, with forward passes only.

The soft prompt is ``p0 + A z``: ``p0`` the embeddings of the starting text (the manual prompt, repeated
to ``bbt.num_virtual_tokens`` as the soft prompt's init), ``A`` a fixed random projection from a
``bbt.intrinsic_dim``-dimensional ``z`` into the prompt's embeddings, drawn, as BBT does, from a normal
distribution whose scale makes ``A z`` as large as the embeddings themselves for ``z`` of unit scale
(std ``sigma_e / (sqrt(d) * sigma)``, ``sigma_e`` the embedding matrix's std). CMA-ES (the ``cmaes``
package) searches ``z`` by the cross-entropy of the label log-probs on the training examples (the loss
the gradient methods minimise, here only evaluated), a population of ``bbt.population`` candidates per
generation, scored in one call that packs them behind each training sentence's cached prefix. The
prompt sits at the template's ``{prompt}`` slot, as RL's and the soft prompt's do.

Its cost is counted like RL's: (prompt, example) pairs scored in training and dev. It evaluates as many
candidates as RL writes prompts (``total_timesteps / env.prompt_length``) and stops before
``max_reward_queries`` would be exceeded. Every score is computed under ``torch.inference_mode``: no
backward pass exists (a test asserts it). Dev is scored at ``evaluations`` evenly spaced points, on
CMA-ES's mean and the best training candidate since the last evaluation; the best by dev accuracy is
exported as a PEFT prompt-tuning adapter (``bbt/``) that ``evaluate --adapter`` reads. A checkpoint
after each dev evaluation (and on a stop request) holds CMA-ES's exact state, so ``--resume`` continues
the run as if it had not stopped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from rlprompt.calibration import calibrate, reference_method, task_calibration
from rlprompt.checkpoint import StopAtOnce, restore_rng, save_checkpoint
from rlprompt.errors import RLPromptError
from rlprompt.evaluation import make_scorer, prompt_budget, scored_result
from rlprompt.export import save_adapter
from rlprompt.methods.base import (
    Estimate,
    EvalLog,
    MethodContext,
    MethodResult,
    classification_correct_of,
    classification_metrics_of,
    dev_accuracy,
    path_bytes,
)
from rlprompt.methods.tuning import initial_soft_prompt, perplexity_before
from rlprompt.perplexity import perplexity
from rlprompt.scoring import ScorerStats
from rlprompt.settings import at_least_one, positive


@dataclass
class BBTConfig:
    """Black-Box Tuning (Sun et al., 2022; rlprompt/methods/bbt.py): CMA-ES over a low-dimensional vector
    projected into soft-prompt embeddings, forward passes only. BBT's settings for RoBERTa-large were 50
    virtual tokens, intrinsic dimension 500, population 20 and 8,000 API calls; here the prompt has RL's
    length and the budget is max_reward_queries (or as many candidates as RL writes prompts)."""

    num_virtual_tokens: int = 5  # as many as the RL prompt has tokens, at the same slot
    intrinsic_dim: int = 500  # BBT's d
    population: int = 20  # BBT's
    sigma: float = 1.0  # CMA-ES's initial step size in the intrinsic space (BBT: 1)
    init_text: str | None = None  # the prompt's starting embeddings; None: the task's manual prompt

    def __post_init__(self) -> None:
        at_least_one("bbt", num_virtual_tokens=self.num_virtual_tokens, intrinsic_dim=self.intrinsic_dim,
                     population=self.population)  # fmt: skip
        positive("bbt", sigma=self.sigma)


def projection(embeddings: torch.Tensor, tokens: int, dim: int, sigma: float, seed: int) -> np.ndarray:
    """BBT's fixed random projection ``(dim, tokens * hidden)``."""
    hidden = embeddings.shape[1]
    scale = float(embeddings.float().std()) / (np.sqrt(dim) * sigma)
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, scale, size=(dim, tokens * hidden)).astype(np.float32)


def cma_state(optimizer) -> dict:
    """CMA-ES's whole state, exactly. Pickling the ``cmaes.CMA`` object would not do: it drops the sampler's
    state and stores the covariance as one triangle, and eigenvectors of a covariance changed in its last bit
    (near-equal eigenvalues, as early in a run) can turn anywhere, so the next samples would differ."""
    state = {name: value for name, value in vars(optimizer).items() if name != "_rng"}
    return {"attributes": copy.deepcopy(state), "rng": optimizer._rng.get_state()}


def restore_cma(optimizer, state: dict) -> None:
    """Put a :func:`cma_state` back into a ``cmaes.CMA`` made with the same settings."""
    vars(optimizer).update(copy.deepcopy(state["attributes"]))
    optimizer._rng.set_state(state["rng"])


def run(ctx: MethodContext) -> MethodResult:
    from cmaes import CMA

    config, task, lm, run_dir = ctx.config, ctx.task, ctx.lm, ctx.run_dir
    section = config.bbt
    resume = ctx.resume
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    train, dev = ctx.train_examples, task.examples("dev")
    labels = np.array([ex.label for ex in train])
    manual = ctx.manual_prompt
    stats = ScorerStats()
    budget_tokens = max(prompt_budget(lm, [manual]), section.num_virtual_tokens)
    scorer = make_scorer(lm, task, config.task.template, prompt_budget=budget_tokens, stats=stats)
    init_text = manual if section.init_text is None else section.init_text
    start = initial_soft_prompt(lm, scorer, section.num_virtual_tokens, init_text, rng)
    embeddings = lm.model.get_input_embeddings().weight
    matrix = projection(embeddings.detach(), section.num_virtual_tokens, section.intrinsic_dim, section.sigma,
                        ctx.seed)  # fmt: skip
    dtype = embeddings.dtype
    calibration = task_calibration(config.calibration, task)
    spent = {"pairs": 0}  # (prompt, example) pairs scored: the budget's unit

    def prompt_of(z: np.ndarray) -> torch.Tensor:
        flat = torch.from_numpy(z.astype(np.float32) @ matrix).view(section.num_virtual_tokens, -1)
        return (start + flat).to(device=embeddings.device, dtype=dtype)

    def score(soft: torch.Tensor, inputs, progress: bool = False) -> np.ndarray:
        spent["pairs"] += len(inputs)
        return scorer.evaluate_logprobs(inputs, soft, progress=progress)

    def train_losses(zs: list[np.ndarray]) -> list[float]:
        # One call for a whole generation: the scorer packs the candidates behind each sentence.
        spent["pairs"] += len(train) * len(zs)
        prompts = torch.stack([prompt_of(z) for z in zs])
        logprobs = torch.from_numpy(scorer.evaluate_soft_prompts(train, prompts))
        logprobs = logprobs - torch.logsumexp(logprobs, -1, keepdim=True)  # over the classes, as CE does
        return (-logprobs[:, np.arange(len(labels)), labels].mean(1)).tolist()

    def dev_scores(z: np.ndarray) -> float:
        soft = prompt_of(z)
        logprobs = score(soft, dev)
        prior = None
        if calibration.active:
            prior = calibration.prior(lambda inputs: score(soft, inputs)[None], lm, scorer.accepts_input)
        return dev_accuracy(calibrate(logprobs[None], prior)[0], dev)

    total = max(1, config.total_timesteps // config.env.prompt_length)
    budget = config.reward_query_budget("bbt")
    optimizer = CMA(mean=np.zeros(section.intrinsic_dim), sigma=section.sigma,
                    population_size=section.population, seed=ctx.seed)  # fmt: skip
    eval_points = ctx.eval_steps(total)
    log = EvalLog(run_dir, total, f"bbt s{ctx.seed}", ctx.progress, resume["log"] if resume else None)
    best_z, best_key = None, (-1.0, -np.inf)
    recent: list = [np.inf, None]  # the best training candidate since the last evaluation: loss, z
    # Pairs a dev evaluation costs: the mean's training loss, then per candidate dev and the calibration
    # prior's reference inputs (measured; the largest seen), for at most two candidates.
    cost = {
        "candidate": len(dev)
        + (len(calibration.reference_inputs(lm, scorer.accepts_input)) if calibration.active else 0)
    }

    def evaluation_cost() -> int:
        return len(train) + 2 * cost["candidate"]

    def evaluate(step: int) -> None:
        nonlocal best_z, best_key
        mean = optimizer.mean.copy()
        candidates = [(mean, train_losses([mean])[0])]
        if recent[1] is not None:
            candidates.append((recent[1], recent[0]))
        accuracies = []
        for z, loss in candidates:
            before = spent["pairs"]
            accuracy = dev_scores(z)
            cost["candidate"] = max(cost["candidate"], spent["pairs"] - before)
            accuracies.append(accuracy)
            if (accuracy, -loss) > best_key:  # dev accuracy, then the training loss breaks ties
                best_key, best_z = (accuracy, -loss), z
        recent[:] = [np.inf, None]
        log.record(step, max(accuracies), stats.tokens_processed, reward_queries=spent["pairs"],
                   train_loss=float(candidates[0][1]))  # fmt: skip
        log.bar.set_postfix_str(f"best dev {best_key[0]:.3f}")

    if budget and budget < evaluation_cost():
        raise RLPromptError(f"max_reward_queries={budget} is less than one dev evaluation of bbt "
                            f"(about {evaluation_cost()} pairs)")  # fmt: skip
    evaluated, next_eval, interrupted = 0, 1, False
    last_checkpoint = 0

    def checkpoint(finished: bool = False) -> None:
        # The start embeddings and the projection are drawn again from the seed on resume.
        nonlocal last_checkpoint
        save_checkpoint(run_dir, {
            "method": "bbt", "step": evaluated, "finished": finished, "next_eval": next_eval,
            "optimizer": cma_state(optimizer),
            "spent": spent["pairs"], "best_z": best_z, "best_key": best_key, "recent": list(recent),
            "cost": dict(cost), "log": log.state(evaluated),
            "scorer_stats": (stats.pairs_scored, stats.tokens_processed),
        })  # fmt: skip
        last_checkpoint = evaluated

    if resume:
        restore_cma(optimizer, resume["optimizer"])
        spent["pairs"] = resume["spent"]
        best_z, best_key, recent[:] = resume["best_z"], tuple(resume["best_key"]), resume["recent"]
        cost.update(resume["cost"])
        stats.pairs_scored, stats.tokens_processed = resume["scorer_stats"]
        evaluated, next_eval = resume["step"], resume["next_eval"]
        last_checkpoint = evaluated
        restore_rng(resume["rng"])
    try:
        try:
            if not resume:
                evaluate(0)
            while evaluated < total and not ctx.stop.requested:
                # Whole generations only (CMA-ES updates on one), leaving room for the last evaluation.
                room = (budget - spent["pairs"] - evaluation_cost()) // len(train) if budget else total
                if min(total - evaluated, room) < optimizer.population_size:
                    break
                population = [optimizer.ask() for _ in range(optimizer.population_size)]
                solutions = list(zip(population, train_losses(population), strict=True))
                for z, loss in solutions:
                    if loss < recent[0]:
                        recent[:] = [loss, z]
                optimizer.tell(solutions)
                evaluated += len(solutions)
                log.bar.update(evaluated - log.bar.n)
                due = False
                while next_eval < len(eval_points) and evaluated >= eval_points[next_eval]:
                    next_eval, due = next_eval + 1, True
                # One that would take the last evaluation's room waits for the end.
                if due and (not budget or spent["pairs"] + 2 * evaluation_cost() <= budget):
                    evaluate(evaluated)
                evaluated_since = log.evaluated_since(last_checkpoint)
                if not ctx.stop.requested and ctx.checkpoint_due(evaluated, last_checkpoint, evaluated_since):
                    checkpoint()
            interrupted = ctx.stop.requested and evaluated < total
        except StopAtOnce:
            raise
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:
            print(f"\nstopped after {evaluated} candidates: evaluating the best prompt so far", flush=True)
        if recent[1] is not None or not log.curve or log.curve[-1]["step"] != evaluated:
            evaluate(evaluated)
        # After that evaluation, so a resumed run's state and metrics.jsonl agree; a finished run's
        # checkpoint lets one stopped during its test evaluation resume there.
        checkpoint(finished=not interrupted)
    finally:
        log.close()
    if best_z is None:
        raise RLPromptError("bbt: no candidate was evaluated on dev")
    train_seconds, lm_tokens, reward_queries = log.elapsed, int(stats.tokens_processed), spent["pairs"]
    soft = prompt_of(best_z)

    test = task.examples("test")
    reference = task_calibration(reference_method(config.calibration), task)
    result = scored_result(
        "bbt", lambda inputs, progress=False: scorer.evaluate_logprobs(inputs, soft, progress=progress)[None],
        test, reference, scorer, ctx.progress,
    )  # fmt: skip
    metrics = result.scored(calibration.active)
    sentences, before = perplexity_before(ctx)
    after = perplexity(lm, sentences, soft_prompt=soft.float())
    artifact = save_adapter(
        "bbt", run_dir, lm=lm, scorer=scorer, task=task, config=config, seed=ctx.seed, manual_prompt=manual,
        soft_prompt=soft.float(),
        metrics={"dev_accuracy": best_key[0], "test_accuracy": metrics.accuracy,
                 "test_accuracy_raw": result.raw.accuracy,
                 "test_accuracy_calibrated": result.metrics.accuracy,
                 "calibrated_with": reference.method, "reward_queries": reward_queries},
        calibration=config.calibration,
    )  # fmt: skip
    return MethodResult(
        method="bbt", seed=ctx.seed, model=lm.name, task=task.name, dev_score=best_key[0],
        test_metrics=classification_metrics_of(result, calibration.active),
        test_correct=classification_correct_of(result, calibration.active), steps=evaluated,
        train_seconds=round(train_seconds, 1), lm_tokens=lm_tokens, trainable_params=section.intrinsic_dim,
        artifact=artifact.name, artifact_bytes=path_bytes(artifact),
        learned=f"{section.num_virtual_tokens} virtual tokens from {section.intrinsic_dim} dimensions",
        interpretable=False, transferable=False, perplexity_before=before, perplexity_after=after,
        curve=log.curve, interrupted=interrupted, calibration=config.calibration,
        calibrated_with=reference.method, reward_queries=reward_queries,
    )  # fmt: skip


def estimate(method: str, config, sizes, speed):
    """Every candidate is new; an evaluation scores the mean on train, then two candidates on dev and the
    calibration's reference inputs (rlprompt.plan). At the cold speed, which overestimates since a
    generation is one packed call (the comparison's BBT: 309 s a seed measured, about 415 s estimated)."""
    candidates = config.total_timesteps // config.env.prompt_length
    per_eval = sizes.train + 2 * (sizes.dev + sizes.train + sizes.dev)
    queries = candidates * sizes.train + sizes.evaluations * per_eval
    budget = config.reward_query_budget(method)
    if budget:
        queries = min(queries, budget)
    return Estimate(queries, queries, queries / speed.cold + sizes.test_seconds(2))  # its own, the manual
