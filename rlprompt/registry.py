"""The methods and task kinds rlprompt knows, one line each: the single place that names them.

A method is a module with a ``run(context) -> MethodResult`` function (``rlprompt.methods.*``) plus one
:class:`MethodSpec` below. The config's method names and sections, the dispatch, the backend checks, the
report's row order, the Python API's prompt methods and ``python -m rlprompt.train --list-methods`` all read
this table.

A task kind is a module (``rlprompt.kinds.*``: how its tasks load, the objective the RL method optimises,
the test report) plus one :class:`TaskKindSpec` below: its metrics with the primary one first, the
methods it allows and the backend capabilities it needs. The driver and the RL method read it.

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
    artifact: str = "prompt"  # what it exports: a key of ARTIFACTS (how it is saved, loaded and evaluated)
    artifact_dir: str | None = None  # the export's directory in the run (weight artifacts); None: its name
    estimate: str | None = (
        None  # "module:function" estimating one seed's cost (rlprompt.plan); None: gradient
    )
    writes_tokens: bool = False  # writes prompts in the tokens of the policy's backbone (policy.backbone)

    @property
    def export_dir(self) -> str:
        return self.artifact_dir or self.name

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
            "exports "
            + ("prompt.json" if self.artifact == "prompt" else f"{self.export_dir}/")
            + f" ({ARTIFACTS[self.artifact].description})",
        ]
        settings = f"; settings: {self.section}.*" if self.section else ""
        cite = f" [{self.reference}]" if self.reference else ""
        return f"{self.name:<14} {self.learns}; {'; '.join(facts)}{settings}{cite}"


@dataclass(frozen=True)
class ArtifactFormat:
    description: str  # what the artifact is, for messages ("a LoRA adapter")
    placement: str  # where it acts when evaluated
    weights: bool  # weights tied to one model's hidden size and vocabulary (they do not transfer)


# How learned things are saved and evaluated (rlprompt.export, rlprompt.evaluation): a method names one.
_WITH_MANUAL = "the template with the manual prompt"
ARTIFACTS: dict[str, ArtifactFormat] = {
    "prompt": ArtifactFormat("a text prompt", "the template's {prompt} slot", False),
    "peft_prompt": ArtifactFormat("a soft prompt",
                                  "virtual tokens at the template's {prompt} slot", True),
    "peft_prefix": ArtifactFormat(
        "a prefix-tuning adapter",
        f"learned keys and values before the input in every layer; {_WITH_MANUAL}", True),
    "peft_weights": ArtifactFormat("a PEFT weight adapter", _WITH_MANUAL, True),
    "model": ArtifactFormat("a fine-tuned model", _WITH_MANUAL, True),
}  # fmt: skip

_SCORES = ("LABEL_LOGPROBS",)
_GRADIENTS = ("DIFFERENTIABLE",)
_EMBEDDINGS = ("EMBEDDING_SCORES",)  # black-box tuning: no gradient, but it feeds prompt embeddings

_GRIPS_EVOPROMPT = "in the spirit of GrIPS (Prasad et al., 2023) and EvoPrompt (Guo et al., 2024)"


def _spec(name: str, module: str, learns: str, interpretable: bool, needs: tuple[str, ...],
          **facts) -> MethodSpec:  # fmt: skip
    """A method whose module is ``rlprompt.methods.<module>`` (runner ``run`` unless named)."""
    runner = facts.pop("runner", "run")
    for key in ("settings", "estimate"):
        if facts.get(key) is not None:
            facts[key] = f"rlprompt.methods.{module}:{facts[key]}"
    return MethodSpec(name, f"rlprompt.methods.{module}:{runner}", learns, interpretable, needs, **facts)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        _spec("rl", "rl", "a discrete prompt (token policy trained by RL)", True, _SCORES, section="rl",
              settings="RLConfig", estimate="estimate", writes_tokens=True,
              reference="Deng et al., 2022, RLPrompt"),
        _spec("search", "search", "a discrete prompt (genetic token search)", True, _SCORES, section="search",
              settings="SearchConfig", estimate="estimate", writes_tokens=True,
              reference=_GRIPS_EVOPROMPT),
        _spec("bbt", "bbt", "a soft prompt found by CMA-ES, forward passes only", False, _EMBEDDINGS,
              section="bbt", settings="BBTConfig", estimate="estimate", artifact="peft_prompt",
              reference="Sun et al., 2022, Black-Box Tuning"),
        _spec("soft_prompt", "tuning", "prompt embeddings at the {prompt} slot (PEFT)", False, _GRADIENTS,
              runner="run_soft_prompt", section="soft_prompt", settings="SoftPromptConfig",
              artifact="peft_prompt", reference="Lester et al., 2021"),
        _spec("prefix_tuning", "tuning", "keys and values before the input in every layer (PEFT)", False,
              _GRADIENTS, runner="run_prefix_tuning", section="prefix_tuning", settings="PrefixTuningSection",
              artifact="peft_prefix", reference="Li and Liang, 2021"),
        _spec("lora", "tuning", "low-rank weight updates (PEFT)", False, _GRADIENTS, runner="run_lora",
              section="lora", settings="LoraSection", artifact="peft_weights", reference="Hu et al., 2022"),
        _spec("ia3", "tuning", "activation rescaling vectors (PEFT IA3)", False, _GRADIENTS, runner="run_ia3",
              section="ia3", settings="IA3Section", artifact="peft_weights", reference="Liu et al., 2022"),
        _spec("full_finetune", "tuning", "every weight of the task LM", False, _GRADIENTS,
              runner="run_full_finetune", section="full_finetune", settings="FinetuneConfig",
              artifact="model", artifact_dir="model"),
        _spec("manual", "fixed", "nothing: the best hand-written prompt on dev", True, _SCORES,
              runner="run_manual", estimate="estimate"),
        _spec("in_context", "fixed", "nothing: k labelled demonstrations before each input", True, _SCORES,
              runner="run_in_context", section="in_context", settings="InContextConfig", estimate="estimate",
              reference="Brown et al., 2020"),
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
    methods_note: str = ""  # why other methods do not apply (for the error message)

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
                     needs=("GENERATION", "SEQUENCE_LOGLIK"),
                     methods_note="it has no labels to train on; the empty and manual prompts are evaluated "
                     "with rl"),
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


def methods_with_artifact(*formats: str) -> tuple[str, ...]:
    return tuple(name for name, spec in METHODS.items() if spec.artifact in formats)
