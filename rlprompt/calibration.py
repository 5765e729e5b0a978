"""Calibration: remove a prompt's label prior from its scores before the argmax.

A small LM's predictions lean toward one label whatever the input ("great" for almost every SST-2
sentence under "It was"); removing that lean costs no training. Every method here estimates the prior
``p̄(y)`` of one prompt on one model from its class probabilities (label log-probs normalised over the
classes) on a set of reference inputs, and scores an input by
``log p(y|x) - log p̄(y)``: the diagonal correction of Zhao et al. (2021) with ``b = 0``. The prior is
averaged in log space (see :func:`log_prior`). The methods differ in the reference inputs:

``none``
    raw scores.
``batch``
    Batch Calibration (Zhou et al., 2024, "Batch Calibration: Rethinking Calibration for In-Context
    Learning and Prompt Engineering"): the task's unlabelled training and dev inputs.
``contextual``
    Contextual calibration (Zhao et al., 2021, "Calibrate Before Use"): the content-free inputs
    "N/A", "" and "[MASK]" (those the model can take: an empty input needs something before the prompt,
    and "[MASK]" is left out where it is the model's own mask token).
``domain``
    Domain-context calibration (Fei et al., 2023, "Mitigating Label Biases for In-context Learning"):
    20 strings of random words drawn from the unlabelled training and dev inputs, each as long as an
    average input, drawn with a fixed seed.
``transductive``
    Batch Calibration on the unlabelled inputs being evaluated (the test inputs, say). It reads the
    evaluation inputs (never their labels), so it is a separate, named option for analysis, never a
    headline; training runs cannot select it.

No method reads a label. The reference inputs keep their ids, so their scores come from the scorer's
reward cache when training has already scored them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlprompt.errors import RLPromptError
from rlprompt.tasks import Example

CALIBRATIONS = ("none", "batch", "contextual", "domain", "transductive")
TRAINING_CALIBRATIONS = ("none", "batch", "contextual", "domain")  # transductive reads evaluation inputs
REFERENCE_CALIBRATION = "batch"  # the calibrated column of reports when a run itself uses none
CONTENT_FREE = ("N/A", "", "[MASK]")
DOMAIN_SAMPLES = 20
DOMAIN_SEED = 0


def check_calibration(name: str, where: str = "calibration", training: bool = False) -> str:
    allowed = TRAINING_CALIBRATIONS if training else CALIBRATIONS
    if name not in allowed:
        raise RLPromptError(
            f"{where} must be one of {', '.join(allowed)}, got {name!r}"
            + (
                " (transductive reads the evaluation inputs: evaluate and transfer only)"
                if name == "transductive" and training
                else ""
            )  # fmt: skip
        )
    return name


def normalised(logprobs: np.ndarray) -> np.ndarray:
    """Label log-probs renormalised over the classes (last axis)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    top = logprobs.max(-1, keepdims=True)
    return logprobs - top - np.log(np.exp(logprobs - top).sum(-1, keepdims=True))


def log_prior(reference_logprobs: np.ndarray) -> np.ndarray:
    """The label prior of each prompt: the mean over the reference inputs of the label log-probs normalised
    over the classes (a geometric mean of the probabilities): ``(..., inputs, classes) -> (..., classes)``.

    Averaging in log space measured better than averaging probabilities (SST-2 test, SmolLM2-135M, batch
    calibration from the 64 training and dev inputs: "It was" 0.697 against 0.674, the empty prompt 0.705
    against 0.702): one confident input moves a log-space mean less."""
    return normalised(reference_logprobs).mean(-2)


def ensemble_scores(matrices) -> np.ndarray:
    """Several prompts' (examples, classes) label scores as one ensemble's: the mean of their label
    log-probabilities, each renormalised over the classes; its argmax is the ensemble's label."""
    return np.mean([normalised(m) for m in matrices], axis=0)


def calibrate(logprobs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """Calibrated scores ``log p(y|x) - log p̄(y)``: ``logprobs`` ``(..., examples, classes)``, ``prior``
    ``(..., classes)``; ``None`` leaves the scores as they are."""
    if prior is None:
        return np.asarray(logprobs)
    return (normalised(logprobs) - np.asarray(prior)[..., None, :]).astype(np.float32)


@dataclass
class Calibration:
    """One calibration method for one task: which reference inputs estimate a prompt's prior.

    ``unlabelled``: the task's training and dev inputs (their labels are never read).
    """

    method: str
    unlabelled: Sequence[Example] = ()

    @property
    def active(self) -> bool:
        return self.method != "none"

    def reference_inputs(self, lm=None, encodable=None, evaluated: Sequence[Example] = ()) -> list[Example]:
        """The inputs whose predictions estimate the prior. ``lm`` and ``encodable`` (a text -> bool test of
        whether the scorer can place the input in its template) filter the content-free inputs;
        ``evaluated`` are the inputs under evaluation (read by ``transductive`` only)."""
        if self.method == "none":
            return []
        if self.method == "batch":
            return [Example(ex.uid, ex.text, -1) for ex in self.unlabelled]
        if self.method == "transductive":
            return [Example(ex.uid, ex.text, -1) for ex in evaluated]
        if self.method == "contextual":
            mask = getattr(lm, "mask_token", None)
            texts = [t for t in CONTENT_FREE if t != mask and (encodable is None or encodable(t))]
            if not texts:
                raise RLPromptError("contextual calibration: the model takes none of the content-free inputs")
            return [Example(f"content-free/{t}", t, -1) for t in texts]  # the text is the id: no clashes
        return domain_inputs(self.unlabelled)

    def prior(self, score, lm=None, encodable=None, evaluated: Sequence[Example] = ()) -> np.ndarray | None:
        """Log prior ``(prompts, classes)`` from ``score(reference inputs) -> (prompts, inputs, classes)``."""
        if not self.active:
            return None
        reference = self.reference_inputs(lm, encodable, evaluated)
        if not reference:
            raise RLPromptError(f"{self.method} calibration has no reference inputs to estimate the prior")
        return log_prior(score(reference))


def domain_inputs(unlabelled: Sequence[Example], samples: int = DOMAIN_SAMPLES, seed: int = DOMAIN_SEED):
    """Fei et al.'s random in-domain texts: words drawn uniformly from the unlabelled inputs' words, each
    text as long (in words) as an average input."""
    words = [w for ex in unlabelled for w in ex.text.split()]
    if not words:
        raise RLPromptError("domain calibration needs unlabelled inputs with words in them")
    length = max(1, round(len(words) / len(unlabelled)))
    rng = np.random.default_rng(seed)
    return [
        Example(f"domain/{text}", text, -1)
        for text in (
            " ".join(words[j] for j in rng.integers(len(words), size=length)) for _ in range(samples)
        )
    ]


def task_calibration(method: str, task) -> Calibration:
    """The calibration ``method`` for a classification task: its unlabelled training and dev inputs."""
    if method not in ("batch", "domain"):
        return Calibration(method, [])
    given = [s for s in ("train", "dev") if task.plan is not None or s in task.split_files]
    if not given:  # (a task of test examples only, to evaluate prompts on)
        raise RLPromptError(
            f"calibration {method!r} estimates the label prior from the task's unlabelled training and dev "
            f"inputs, and task {task.name!r} has neither; give it a train or dev file, or calibration none"
        )
    return Calibration(method, [ex for s in given for ex in task.examples(s)])


def reference_method(method: str) -> str:
    """The method of a report's calibrated column: the run's own, or batch when the run uses none."""
    return method if method not in ("none", "transductive") else REFERENCE_CALIBRATION


def scorer_prior(scorer, prompts, calibration: Calibration | None, evaluated: Sequence[Example] = ()):
    """The log prior ``(prompts, classes)`` of discrete ``prompts`` on ``scorer``'s model (None: raw)."""
    if calibration is None or not calibration.active:
        return None
    return calibration.prior(
        lambda reference: scorer.score(prompts, reference), scorer.lm, scorer.accepts_input, evaluated
    )


def recorded_priors(scorer, prompts, calibration: Calibration) -> list[list[float]]:
    """``prompt.json``'s ``priors``: each prompt's log label prior on ``scorer``'s model where the calibration
    estimates it from fixed inputs (batch, domain, contextual), which scoring the prompt by hand subtracts
    from the label words' log-probs. Empty for raw scores and for transductive calibration (its prior is
    that of the inputs being scored). The runs have scored these inputs already: nothing new is scored."""
    if not calibration.active or calibration.method == "transductive":
        return []
    return [[round(float(v), 6) for v in row] for row in scorer_prior(scorer, prompts, calibration)]
