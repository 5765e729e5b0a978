"""The methods rlprompt can run, one line each: the single place that names them.

A method is a module with a ``run(context) -> MethodResult`` function (``rlprompt.methods.*``) plus one
:class:`MethodSpec` below. The config's method names, the dispatch, the backend checks, the report's row
order, the Python API's prompt methods and ``python -m rlprompt.train --list-methods`` all read this table.
This module imports nothing of the package, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    runner: str  # "module:function" that trains it: function(context) -> MethodResult
    learns: str  # what is learned, in a few words
    interpretable: bool  # the artifact reads as text (and, being text, moves to other models)
    needs: tuple[str, ...]  # rlprompt.backends.Capability names the task LM's backend must offer
    section: str | None = None  # its TrainConfig section, if it has settings
    reference: str = ""  # the paper it follows

    @property
    def transferable(self) -> bool:
        return self.interpretable  # text moves to other models; weights and embeddings do not

    @property
    def writes_prompt(self) -> bool:
        """Its artifact is a ``prompt.json`` (what ``rlprompt.learn`` returns)."""
        return self.interpretable

    def line(self) -> str:
        facts = [
            "interpretable" if self.interpretable else "opaque",
            "transferable" if self.transferable else "model-bound",
            "needs " + ", ".join(n.lower().replace("_", " ") for n in self.needs),
        ]
        settings = f"; settings: {self.section}.*" if self.section else ""
        cite = f" [{self.reference}]" if self.reference else ""
        return f"{self.name:<14} {self.learns}; {'; '.join(facts)}{settings}{cite}"


_SCORES = ("LABEL_LOGPROBS",)
_GRADIENTS = ("DIFFERENTIABLE",)
_EMBEDDINGS = ("EMBEDDING_SCORES",)  # black-box tuning: no gradient, but it feeds prompt embeddings

_GRIPS_EVOPROMPT = "in the spirit of GrIPS (Prasad et al., 2023) and EvoPrompt (Guo et al., 2024)"

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("rl", "rlprompt.methods.rl:run", "a discrete prompt (token policy trained by RL)",
                   True, _SCORES, "rl", "Deng et al., 2022, RLPrompt"),
        MethodSpec("search", "rlprompt.methods.search:run", "a discrete prompt (genetic token search)",
                   True, _SCORES, "search", _GRIPS_EVOPROMPT),
        MethodSpec("bbt", "rlprompt.methods.bbt:run", "a soft prompt found by CMA-ES, forward passes only",
                   False, _EMBEDDINGS, "bbt", "Sun et al., 2022, Black-Box Tuning"),
        MethodSpec("soft_prompt", "rlprompt.methods.tuning:run_soft_prompt",
                   "prompt embeddings at the {prompt} slot (PEFT)", False, _GRADIENTS, "soft_prompt",
                   "Lester et al., 2021"),
        MethodSpec("prefix_tuning", "rlprompt.methods.tuning:run_prefix_tuning",
                   "keys and values before the input in every layer (PEFT)", False, _GRADIENTS,
                   "prefix_tuning", "Li and Liang, 2021"),
        MethodSpec("lora", "rlprompt.methods.tuning:run_lora", "low-rank weight updates (PEFT)",
                   False, _GRADIENTS, "lora", "Hu et al., 2022"),
        MethodSpec("ia3", "rlprompt.methods.tuning:run_ia3", "activation rescaling vectors (PEFT IA3)",
                   False, _GRADIENTS, "ia3", "Liu et al., 2022"),
        MethodSpec("full_finetune", "rlprompt.methods.tuning:run_full_finetune",
                   "every weight of the task LM", False, _GRADIENTS, "full_finetune"),
        MethodSpec("manual", "rlprompt.methods.fixed:run_manual",
                   "nothing: the best hand-written prompt on dev", True, _SCORES),
        MethodSpec("in_context", "rlprompt.methods.fixed:run_in_context",
                   "nothing: k labelled demonstrations before each input", True, _SCORES, "in_context",
                   "Brown et al., 2020"),
    )
}  # fmt: skip
STYLE_NEEDS = ("GENERATION", "SEQUENCE_LOGLIK")  # style transfer rewrites text and scores its fluency


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)
