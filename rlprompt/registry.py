"""The methods and task kinds rlprompt knows, one line each: the single place that names them.

A method is a module with a ``run(context) -> MethodResult`` function (``rlprompt.methods.*``) plus one
:class:`MethodSpec` below. The config's method names and sections, the dispatch, the backend checks, the
report's row order, the Python API's prompt methods and ``python -m rlprompt.train --list-methods`` all read
this table.

A task kind is a module (``rlprompt.kinds.*``: how its tasks load, the objective the RL method optimises,
the test report) plus one :class:`TaskKindSpec` below: its metrics with the primary one first, the
methods it allows and the backend capabilities it needs. The driver, the RL method and the report read it.

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
    settings: str | None = None  # "module:Class": the section's dataclass (checks its values itself)

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
                   True, _SCORES, "rl", "Deng et al., 2022, RLPrompt", "rlprompt.methods.rl:RLConfig"),
        MethodSpec("search", "rlprompt.methods.search:run", "a discrete prompt (genetic token search)",
                   True, _SCORES, "search", _GRIPS_EVOPROMPT, "rlprompt.methods.search:SearchConfig"),
        MethodSpec("bbt", "rlprompt.methods.bbt:run", "a soft prompt found by CMA-ES, forward passes only",
                   False, _EMBEDDINGS, "bbt", "Sun et al., 2022, Black-Box Tuning",
                   "rlprompt.methods.bbt:BBTConfig"),
        MethodSpec("soft_prompt", "rlprompt.methods.tuning:run_soft_prompt",
                   "prompt embeddings at the {prompt} slot (PEFT)", False, _GRADIENTS, "soft_prompt",
                   "Lester et al., 2021", "rlprompt.methods.tuning:SoftPromptConfig"),
        MethodSpec("prefix_tuning", "rlprompt.methods.tuning:run_prefix_tuning",
                   "keys and values before the input in every layer (PEFT)", False, _GRADIENTS,
                   "prefix_tuning", "Li and Liang, 2021", "rlprompt.methods.tuning:PrefixTuningSection"),
        MethodSpec("lora", "rlprompt.methods.tuning:run_lora", "low-rank weight updates (PEFT)",
                   False, _GRADIENTS, "lora", "Hu et al., 2022", "rlprompt.methods.tuning:LoraSection"),
        MethodSpec("ia3", "rlprompt.methods.tuning:run_ia3", "activation rescaling vectors (PEFT IA3)",
                   False, _GRADIENTS, "ia3", "Liu et al., 2022", "rlprompt.methods.tuning:IA3Section"),
        MethodSpec("full_finetune", "rlprompt.methods.tuning:run_full_finetune",
                   "every weight of the task LM", False, _GRADIENTS, "full_finetune", "",
                   "rlprompt.methods.tuning:FinetuneConfig"),
        MethodSpec("manual", "rlprompt.methods.fixed:run_manual",
                   "nothing: the best hand-written prompt on dev", True, _SCORES),
        MethodSpec("in_context", "rlprompt.methods.fixed:run_in_context",
                   "nothing: k labelled demonstrations before each input", True, _SCORES, "in_context",
                   "Brown et al., 2020", "rlprompt.methods.fixed:InContextConfig"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class TaskKindSpec:
    name: str
    module: str  # its module: load(config) -> LoadedTask, objective(ctx, policy_lm) -> an Objective
    metrics: tuple[str, ...]  # what a run reports on test (MethodResult.test_metrics), the primary first
    description: str
    builtin_tasks: tuple[str, ...] = ()  # the built-in task names of this kind (task.kind names others)
    methods: tuple[str, ...] | None = None  # the methods it allows (None: every method)
    needs: tuple[str, ...] | None = None  # capabilities every method needs on it (None: each method's own)
    calibrates: bool = True  # its scores carry a label prior that calibration removes

    @property
    def primary(self) -> str:
        return self.metrics[0]


TASK_KINDS: dict[str, TaskKindSpec] = {
    spec.name: spec
    for spec in (
        TaskKindSpec("classification", "rlprompt.kinds.classification", ("accuracy", "macro_f1"),
                     "label a sentence (or pair) through verbalizer words"),
        TaskKindSpec("style", "rlprompt.kinds.style", ("joint", "j_csf"),
                     "rewrite a sentence into a target style (RLPrompt's text style transfer)",
                     builtin_tasks=("yelp-sentiment", "shakespeare"), methods=("rl",),
                     needs=("GENERATION", "SEQUENCE_LOGLIK"), calibrates=False),
    )
}  # fmt: skip
DEFAULT_KIND = "classification"  # task YAML files and data directories hold labelled examples


def task_kind(task_name: str, declared: str | None = None) -> TaskKindSpec:
    """The kind of a task: ``declared`` (the config's ``task.kind``) when given, else the kind that lists
    ``task_name`` among its built-in tasks, else classification."""
    if declared is not None:
        return TASK_KINDS[declared]
    for spec in TASK_KINDS.values():
        if task_name in spec.builtin_tasks:
            return spec
    return TASK_KINDS[DEFAULT_KIND]


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)
