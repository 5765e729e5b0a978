"""Scoring prompts and exported baselines on a task's examples: metrics raw and calibrated, the reference
rows (manual and empty prompts) every comparison carries, and the task's Scorer on a model. The library
side of ``python -m rlprompt.evaluate`` (:mod:`rlprompt.evaluate`), used by the methods and the driver."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlprompt.backends import make_label_scorer
from rlprompt.calibration import (
    Calibration,
    calibrate,
    ensemble_scores,
    scorer_prior,
    task_calibration,
)
from rlprompt.errors import RLPromptError
from rlprompt.export import (
    PEFT_WEIGHT_ADAPTERS,
    SOFT_PROMPT_METHODS,
    load_adapter_meta,
)
from rlprompt.metrics import ClassificationMetrics, classification_metrics
from rlprompt.models import LanguageModel, load_model, wrap_model
from rlprompt.registry import METHODS
from rlprompt.scoring import LabelScorer, PromptLike, prompt_budget
from rlprompt.tasks import Task


@dataclass
class PromptResult:
    """A prompt's metrics: ``metrics`` under the calibration asked for (``calibration``), ``raw`` without."""

    prompt: str
    prompt_ids: list[int]
    metrics: ClassificationMetrics
    raw: ClassificationMetrics | None = None
    calibration: str = "none"
    # (examples, classes): the scores ``metrics`` and ``raw`` were computed from, for ensembles of prompts
    # (ensemble_accuracies)
    scores: np.ndarray | None = None
    raw_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.raw is None:
            self.raw = self.metrics

    def scored(self, calibrated: bool) -> ClassificationMetrics:
        """The metrics as a run scores: calibrated (when its calibration is active) or raw."""
        return self.metrics if calibrated else self.raw


def evaluate_prompts(
    scorer: LabelScorer, examples, prompts: list[PromptLike], progress: bool = False,
    calibration: Calibration | None = None,
) -> list[PromptResult]:  # fmt: skip
    """Score every prompt on every example in one batched Scorer call and compute metrics, raw and (with
    ``calibration``) calibrated with each prompt's own prior on this model."""
    logprobs = scorer.score(prompts, examples, progress=progress)
    prior = scorer_prior(scorer, prompts, calibration, evaluated=examples)
    calibrated = calibrate(logprobs, prior)
    labels = np.array([ex.label for ex in examples])
    method = calibration.method if calibration is not None else "none"
    results = []
    for prompt, lp, cal in zip(prompts, logprobs, calibrated, strict=True):
        ids = list(scorer.prompt_ids(prompt))
        text = prompt if isinstance(prompt, str) else scorer.lm.decode(ids)
        raw = classification_metrics(lp, labels)
        metrics = classification_metrics(cal, labels) if prior is not None else raw
        results.append(PromptResult(text, ids, metrics, raw, method, cal if prior is not None else lp, lp))
    return results


def ensemble_result(results: list[PromptResult], labels) -> PromptResult:
    """``results`` (prompts scored on the same examples) as one ensemble (:func:`ensemble_scores`),
    calibrated as each was scored (and raw beside it)."""
    labels = np.asarray(labels)
    scores = ensemble_scores([r.scores for r in results])
    raw = ensemble_scores([r.raw_scores for r in results])
    return PromptResult(
        f"ensemble of {len(results)} prompts", [], classification_metrics(scores, labels),
        classification_metrics(raw, labels), results[0].calibration, scores, raw,
    )  # fmt: skip


def ensemble_accuracies(results: list[PromptResult], labels, calibrated: bool,
                        sizes=(3, 5, 10)) -> dict[int, float]:  # fmt: skip
    """Accuracy (calibrated or raw) of the ensemble of the first k of ``results`` (best by dev first), for
    each k in ``sizes`` up to ``len(results)`` and for all of them (:func:`ensemble_result`)."""
    sizes = sorted({*(k for k in sizes if k <= len(results)), len(results)})
    return {k: float(ensemble_result(results[:k], labels).scored(calibrated).accuracy) for k in sizes}


def reference_results(
    scorer: LabelScorer, task: Task, manual: str, calibration_method: str, progress: bool = False
) -> dict:
    """The reference rows every comparison carries: the manual prompt and the empty prompt on test, raw
    and calibrated (``calibration_method``: the run's, or batch when the run uses none)."""
    calibration = task_calibration(calibration_method, task)
    manual_result, empty_result = evaluate_prompts(
        scorer, task.examples("test"), [manual, ""], progress, calibration
    )
    return {
        "calibrated_with": calibration_method,
        "rows": [
            {
                "name": name,
                "prompt": prompt,
                "test_accuracy_raw": r.raw.accuracy,
                "test_accuracy_calibrated": r.metrics.accuracy,
            }
            for name, prompt, r in (
                ("manual prompt", manual, manual_result),
                ("empty prompt", "", empty_result),
            )
        ],  # fmt: skip
    }


def make_scorer(lm: LanguageModel, task: Task, template: str | None = None, **kwargs) -> LabelScorer:
    """The scorer for a task on a model (from the model's backend), with the task's template for that
    model kind unless given."""
    return make_label_scorer(lm, template or task.template_for(lm.kind), task.verbalizers, **kwargs)


def evaluate_adapter(
    path: str, lm: LanguageModel, task: Task, examples, batch_tokens: int = 4096, progress: bool = False,
    calibration: Calibration | None = None,
) -> PromptResult:  # fmt: skip
    """Evaluate an exported baseline (see :func:`rlprompt.export.save_adapter`) on ``lm``, with its own
    template and, for LoRA and fine-tuned models, its manual prompt; raw and (with ``calibration``)
    calibrated with its own prior."""
    import copy

    meta = load_adapter_meta(path)
    if meta["model_kind"] != lm.kind:
        raise RLPromptError(f"{path} was trained on a {meta['model_kind']} model; {lm.name} is {lm.kind}")
    if meta["method"] in SOFT_PROMPT_METHODS:
        from peft import PeftModel

        # Reads the prompt embeddings; prompt tuning leaves the wrapped (shared) model itself unchanged.
        soft = PeftModel.from_pretrained(lm.model, path).prompt_encoder["default"].embedding.weight.detach()
        scorer = make_scorer(
            lm, task, meta["template"], batch_tokens=batch_tokens, prompt_budget=soft.shape[0]
        )

        def score(inputs, progress=False):
            return scorer.evaluate_logprobs(inputs, soft, progress=progress)[None]

        name = f"soft prompt ({soft.shape[0]} virtual tokens)"
    elif METHODS[meta["method"]].artifact == "peft_prefix":
        import torch
        from peft import PeftModel

        wrapper = PeftModel.from_pretrained(copy.deepcopy(lm.model), path)
        adapted = wrap_model(f"{lm.name}+prefix_tuning", wrapper.get_base_model(), lm.tokenizer, lm.kind)
        prompt = meta["prompt"] or ""
        scorer = make_scorer(adapted, task, meta["template"], batch_tokens=batch_tokens,
                             prompt_budget=prompt_budget(lm, [prompt]), prefix_model=wrapper)  # fmt: skip
        embed = lm.model.get_input_embeddings()
        with torch.no_grad():
            ids = torch.tensor(list(scorer.prompt_ids(prompt)), dtype=torch.long, device=embed.weight.device)
            prompt_embeds = embed(ids)

        def score(inputs, progress=False):
            return scorer.evaluate_logprobs(inputs, prompt_embeds, reuse_prefix=False, progress=progress)[
                None
            ]

        name = f"prefix_tuning ({prompt!r})"
    else:
        if meta["method"] in PEFT_WEIGHT_ADAPTERS:
            from peft import PeftModel

            merged = PeftModel.from_pretrained(copy.deepcopy(lm.model), path).merge_and_unload()
            adapted = wrap_model(f"{lm.name}+{meta['method']}", merged, lm.tokenizer, lm.kind)
        else:
            adapted = load_model(str(path), lm.device, lm.dtype)
        prompt = meta["prompt"] or ""
        scorer = make_scorer(
            adapted,
            task,
            meta["template"],
            batch_tokens=batch_tokens,
            prompt_budget=prompt_budget(lm, [prompt]),
        )

        def score(inputs, progress=False):
            return scorer.score([prompt], inputs, progress=progress)

        name = f"{meta['method']} ({prompt!r})"
    return scored_result(name, score, examples, calibration, scorer, progress)


def scored_result(
    name: str, score, examples, calibration: Calibration | None, scorer: LabelScorer, progress: bool = False
) -> PromptResult:
    """Metrics of one scoring function (``score(inputs) -> (1, inputs, classes)``: a soft prompt, an adapted
    model), raw and calibrated with its own prior."""
    labels = np.array([ex.label for ex in examples])
    logprobs = score(examples, progress=progress)
    prior = None
    if calibration is not None and calibration.active:
        prior = calibration.prior(score, scorer.lm, scorer.accepts_input, evaluated=examples)
    scores = calibrate(logprobs, prior)[0] if prior is not None else logprobs[0]
    raw = classification_metrics(logprobs[0], labels)
    metrics = classification_metrics(scores, labels) if prior is not None else raw
    method = calibration.method if calibration is not None else "none"
    return PromptResult(name, [], metrics, raw, method, scores, logprobs[0])  # scores kept for ensembles
