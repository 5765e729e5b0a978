"""Task-LM backends: where the task LM runs, and what it can do for the methods.

A backend is one module plus one entry in ``BACKENDS``: how to recognise its model names, what it can
do (its :class:`Capability` flags), how to load a model and how to score labels with it. The reward cache,
the statistics and the budgets sit above the backends (:class:`rlprompt.scoring.LabelScorer`), so every
method scores through one interface whatever computes the numbers.

* ``hf`` (:mod:`rlprompt.backends.hf`): a Hugging Face model in this process, on any device and dtype:
  offline aliases, local directories, cached hub ids. Everything.
* ``openai`` (:mod:`rlprompt.backends.openai`): an OpenAI-compatible completions server (vLLM, SGLang,
  llama.cpp's server, hosted APIs), named ``openai:<base URL>[#model=NAME&tokenizer=DIR&key_env=VAR]``.
  Label log-probs, generation (style transfer) and sequence log-likelihoods; no gradients, no embeddings.

A method that needs a capability the backend lacks is refused before anything runs
(:func:`require`).
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass

from rlprompt.errors import RLPromptError


class Capability(enum.Flag):
    """What a backend can do for the methods."""

    LABEL_LOGPROBS = enum.auto()  # per-class label log-probs for prompts x examples (every backend)
    GENERATION = enum.auto()  # text generation (style transfer)
    SEQUENCE_LOGLIK = enum.auto()  # log-likelihood of whole texts (fluency of rewrites, forgetting check)
    EMBEDDING_SCORES = enum.auto()  # label log-probs for prompt embeddings, without gradients
    DIFFERENTIABLE = enum.auto()  # a forward pass that carries gradients (soft prompt, LoRA, fine-tuning)


CAPABILITY_NAMES = {
    Capability.LABEL_LOGPROBS: "label log-probs",
    Capability.GENERATION: "text generation",
    Capability.SEQUENCE_LOGLIK: "sequence log-likelihoods",
    Capability.EMBEDDING_SCORES: "scores for prompt embeddings",
    Capability.DIFFERENTIABLE: "a differentiable forward pass (in-process models only)",
}


@dataclass(frozen=True)
class Backend:
    """A registered backend: its name, the prefix of its model names, its capabilities and its module
    (which defines ``load(name, device, dtype)`` and ``make_scorer(lm, template, verbalizers, **kw)``)."""

    name: str
    prefix: str  # model names starting with it belong here ("" matches every other name)
    capabilities: Capability
    module: str

    def load(self, name: str, device: str, dtype: str):
        return importlib.import_module(self.module).load(name, device, dtype)


BACKENDS = (
    Backend(
        "openai",
        "openai:",
        Capability.LABEL_LOGPROBS | Capability.GENERATION | Capability.SEQUENCE_LOGLIK,
        "rlprompt.backends.openai",
    ),
    Backend("hf", "", ~Capability(0), "rlprompt.backends.hf"),  # the default: everything
)


def backend_of(model_name: str) -> Backend:
    """The backend a model name belongs to."""
    return next(b for b in BACKENDS if model_name.startswith(b.prefix))


def require(model_name: str, needed: Capability, who: str) -> None:
    """One clear error, before anything runs, when ``who`` needs what the model's backend cannot do."""
    backend = backend_of(model_name)
    missing = needed & ~backend.capabilities
    if missing:
        what = ", ".join(CAPABILITY_NAMES[c] for c in Capability if c in missing)
        raise RLPromptError(
            f"{who} needs {what}, which the {backend.name} backend of model {model_name!r} does not offer"
        )


def load_task_model(name: str, device: str = "auto", dtype: str = "auto"):
    """The task LM for a model name, from its backend."""
    return backend_of(name).load(name, device, dtype)


def make_label_scorer(lm, template: str, verbalizers, **kwargs):
    """The label scorer of ``lm``'s backend. Keyword arguments a backend does not use are ignored (the
    in-process scorer's batch and cache sizes mean nothing to a server)."""
    import inspect

    module = importlib.import_module(backend_of(lm.name).module)
    accepted = inspect.signature(module.SCORER.__init__).parameters
    return module.SCORER(lm, template, verbalizers, **{k: v for k, v in kwargs.items() if k in accepted})
