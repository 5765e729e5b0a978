"""Methods with nothing to train: hand-written prompts and in-context demonstrations.

``manual`` scores each hand-written prompt on dev and keeps the best. ``in_context`` puts k labelled
training examples, filled into the task's own template with the manual prompt, before each input (drawn
by the run's seed, balanced over classes), as GPT-3-style few-shot prompting does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlprompt.calibration import calibrate, recorded_priors, reference_method, scorer_prior, task_calibration
from rlprompt.evaluation import evaluate_prompts, make_scorer, prompt_budget
from rlprompt.export import LearnedPrompt, recorded_model_name, save_prompt
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
from rlprompt.scoring import ScorerStats
from rlprompt.settings import at_least_one
from rlprompt.templates import in_context_template
from rlprompt.version import __version__


@dataclass
class InContextConfig:
    k: int = 4  # demonstrations from the training split, balanced over classes, drawn by the run's seed
    separator: str = "\n"

    def __post_init__(self) -> None:
        at_least_one("in_context", k=self.k)


def run_manual(ctx: MethodContext) -> MethodResult:
    prompts = list(dict.fromkeys(ctx.config.manual_prompts or [ctx.manual_prompt]))
    return _run_fixed(ctx, "manual", ctx.config.task.template, prompts)


def run_in_context(ctx: MethodContext) -> MethodResult:
    task = ctx.task
    base = ctx.config.task.template or task.template_for(ctx.lm.kind)
    template = in_context_template(
        base, ctx.lm.kind, ctx.train_examples, task.verbalizers, ctx.manual_prompt,
        ctx.config.in_context.k, ctx.config.in_context.separator, ctx.seed,
    )  # fmt: skip
    return _run_fixed(ctx, "in_context", template, [ctx.manual_prompt])


def _run_fixed(ctx: MethodContext, method: str, template: str | None, prompts: list[str]) -> MethodResult:
    task, lm, run_dir = ctx.task, ctx.lm, ctx.run_dir
    stats = ScorerStats()
    scorer = make_scorer(lm, task, template, prompt_budget=prompt_budget(lm, prompts), stats=stats)
    dev = task.examples("dev")
    log = EvalLog(run_dir, 0, f"{method} s{ctx.seed}", ctx.progress)
    start = time.perf_counter()
    calibration = task_calibration(ctx.config.calibration, task)
    try:
        logprobs = scorer.score(prompts, dev, progress=ctx.progress)
        logprobs = calibrate(logprobs, scorer_prior(scorer, prompts, calibration))
        accuracies = [dev_accuracy(lp, dev) for lp in logprobs]
        best = int(np.argmax(accuracies))
        log.record(0, accuracies[best], stats.tokens_processed, prompt=prompts[best])
    finally:
        log.close()
    seconds = time.perf_counter() - start
    tokens = int(stats.tokens_processed)
    # The shared test scorer has the configured template; in-context demonstrations make another one.
    test_scorer = ctx.test_scorer if template == ctx.config.task.template else scorer
    cfg = ctx.config
    reference = task_calibration(reference_method(cfg.calibration), task)
    (result,) = evaluate_prompts(test_scorer, task.examples("test"), [prompts[best]], ctx.progress, reference)
    headline = result.scored(calibration.active)
    exported = LearnedPrompt(
        text=prompts[best], token_ids=list(scorer.prompt_ids(prompts[best])),
        model=recorded_model_name(lm.name), model_kind=lm.kind, template=scorer.template.text,
        verbalizers=list(task.verbalizers),
        class_names=list(task.class_names), task=task.name, data_seed=cfg.task.seed,
        task_source=cfg.task.name, test_examples=cfg.task.test_examples,
        priors=recorded_priors(scorer, [prompts[best]], calibration),
        method=method, seed=ctx.seed, library_version=__version__, calibration=cfg.calibration,
        metrics={"dev_accuracy": accuracies[best], "test_accuracy": headline.accuracy,
                 "test_accuracy_raw": result.raw.accuracy,
                 "test_accuracy_calibrated": result.metrics.accuracy, "calibrated_with": reference.method,
                 "candidates": dict(zip(prompts, accuracies, strict=True))},
    )  # fmt: skip
    save_prompt(exported, run_dir / "prompt.json")
    learned = repr(prompts[best]) + (
        f" + {cfg.in_context.k} demonstrations" if method == "in_context" else ""
    )
    return MethodResult(
        method=method, seed=ctx.seed, model=lm.name, task=task.name, dev_score=accuracies[best],
        test_metrics=classification_metrics_of(result, calibration.active),
        test_correct=classification_correct_of(result, calibration.active), steps=0,
        train_seconds=round(seconds, 1), lm_tokens=tokens, trainable_params=0, artifact="prompt.json",
        artifact_bytes=path_bytes(run_dir / "prompt.json"), learned=learned, interpretable=True,
        transferable=True, curve=log.curve, calibration=cfg.calibration,
        calibrated_with=reference.method, reward_queries=int(stats.pairs_scored),
    )  # fmt: skip


def estimate(method: str, config, sizes, speed):
    """The candidates on dev and the chosen one on test; demonstrations make every input that much longer."""
    queries = (len(config.manual_prompts) or 1) * sizes.dev
    context = 1 + config.in_context.k if method == "in_context" else 1
    return Estimate(queries, queries, (queries + sizes.test) / speed.cold * context)
