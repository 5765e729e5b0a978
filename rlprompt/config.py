"""The run configuration's schema: the core sections here, one section per method from the method's own
module (named in :data:`rlprompt.registry.METHODS`), filled from YAML and ``--set`` by the typed loader in
:mod:`rlprompt.settings`."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import typing
from pathlib import Path

from rlprompt.errors import RLPromptError
from rlprompt.export import recorded_model_name, recorded_task_name
from rlprompt.files import read_yaml
from rlprompt.registry import METHODS, TASK_KINDS
from rlprompt.settings import apply_overrides, at_least_one, from_dict


@dataclasses.dataclass
class TaskConfig:
    name: str = "sst-2"  # a built-in task or a task YAML file
    seed: str = "16-100"  # few-shot data seed (built-in tasks)
    # several data splits (RLPrompt's protocol: all five); each runs the grid in its own subdirectory and
    # the report covers them all. Empty: just `seed`.
    seeds: list[str] = dataclasses.field(default_factory=list)
    template: str | None = None  # None: the task's template for the model kind
    kind: str | None = None  # the task kind (rlprompt.registry.TASK_KINDS); None: a built-in task's own, else
    # classification
    # Test on a fixed sample of this many test examples (drawn with seed 0, so the same for every method,
    # seed and run; e.g. 2,000 of AG News's 7,600); None: all of them.
    test_examples: int | None = None
    # Classification: the label word of each class, in class order (e.g. [negative, positive] for SST-2),
    # in place of the task's own; every method of the run reads labels through them, and exported prompts
    # and adapters record them. None: the task's.
    verbalizers: list[str] | None = None
    # Classification: this many labelled training examples before each input in every method's template
    # (balanced over classes, drawn by the run's seed, each filled with the manual prompt and its label
    # word, as the in_context method draws them), so that every method of a seed reads the same ones;
    # each run's config.yaml records its template, and its demonstrations' ids under exclude_train. 0: none.
    demonstrations: int = 0
    # Classification: ids of training examples no method trains on (rewards, gradient steps, search,
    # in-context draws); task.demonstrations adds its own, whose answers the template shows. []: none.
    exclude_train: list[str] = dataclasses.field(default_factory=list)

    @property
    def seed_list(self) -> list[str]:
        return list(dict.fromkeys(self.seeds or [self.seed]))

    def __post_init__(self) -> None:
        if len(self.seed_list) == 1:  # one split in the list: it is the split
            self.seed, self.seeds = self.seed_list[0], []
        if self.test_examples is not None and self.test_examples < 1:
            raise ValueError(
                f"'task.test_examples' must be at least 1 (or left out), not {self.test_examples}"
            )
        if self.verbalizers is not None:
            words = [str(w).strip() for w in self.verbalizers]
            if not words or not all(words) or len(set(words)) != len(words):
                raise ValueError(
                    "'task.verbalizers' must be distinct, non-empty words, one per class, got "
                    f"{self.verbalizers!r}"
                )
            self.verbalizers = words
        k = self.demonstrations
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"'task.demonstrations' must be a whole number >= 0, got {k!r}")
        ids = self.exclude_train
        if not isinstance(ids, list) or not all(isinstance(uid, str) for uid in ids):
            raise ValueError(f"'task.exclude_train' must be a list of example ids, got {ids!r}")
        if self.kind is not None and self.kind not in TASK_KINDS:
            raise ValueError(f"'task.kind' must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")


# RL writes one token an action and search edits one a step: RLPrompt's prompts have 2-5 tokens, and at 8 the
# screens already learned worse (README "More RL levers"); a longer prompt is the template's job.
MAX_PROMPT_LENGTH = 64


@dataclasses.dataclass
class EnvConfig:
    prompt_length: int = 5  # tokens per prompt (RLPrompt: 5)
    num_envs: int = 16  # prompts per reward batch (RLPrompt: 16)
    examples_per_reward: int = 32  # training examples each batch of prompts is scored on
    # "gap": RLPrompt's reward, the probability gap between the right label and the best wrong one (scaled
    # below); "loglik": the right label's log-probability, what the gradient methods' cross-entropy uses
    reward: str = "gap"
    correct_scale: float = 200.0  # RLPrompt's gap reward: scale when the example is classified right
    wrong_scale: float = 180.0  # ... and when it is wrong
    normalize: bool = True  # z-score rewards within each batch of prompts

    def __post_init__(self) -> None:
        at_least_one("env", prompt_length=self.prompt_length, num_envs=self.num_envs,
                     examples_per_reward=self.examples_per_reward)  # fmt: skip
        if self.prompt_length > MAX_PROMPT_LENGTH:
            raise ValueError(
                f"'env.prompt_length' must be at most {MAX_PROMPT_LENGTH} tokens (one action a token), got "
                f"{self.prompt_length}"
            )
        if self.reward not in ("gap", "loglik"):
            raise ValueError(f"'env.reward' must be 'gap' or 'loglik', got {self.reward!r}")


@dataclasses.dataclass
class VocabConfig:
    # "frequent" (default): the 1,000 commonest whole words; "all": every token (49k for SmolLM2, as in
    # RLPrompt); "list": your words. Measured on the quickstart (seed 0, same 16,000 steps): "frequent"
    # learns faster (training-batch accuracy 0.70 vs 0.55 after 4,000 steps; best dev 0.72 vs 0.66) and
    # writes readable words (" several several certain few most" vs "uthors repeat insure UNC this");
    # test accuracy ended level (0.728 vs 0.733).
    kind: typing.Literal["frequent", "all", "list"] = "frequent"
    size: int = 1000
    tokens: list[str] = dataclasses.field(default_factory=list)  # for kind "list"

    def __post_init__(self) -> None:
        if self.size < 2:  # one word leaves the policy nothing to choose
            raise ValueError(f"'vocab.size' must be at least 2, got {self.size}")
        if self.kind == "list":
            if not self.tokens:
                raise ValueError("vocab.kind 'list' needs vocab.tokens: the words the policy may use")
            if len({w.strip() for w in self.tokens}) < 2:
                raise ValueError(f"'vocab.tokens' must hold at least 2 distinct words, got {self.tokens}")


@dataclasses.dataclass
class PolicyConfig:
    backbone: str | None = None  # frozen LM that reads the prompt; None: the task model
    adapter_hidden: int = 2048  # RLPrompt's MLP adapter width
    value_hidden: int = 256


@dataclasses.dataclass
class StyleConfig:
    """Style-transfer tasks (``task.name: yelp-sentiment`` or ``shakespeare``): how rewrites are made and
    scored. The training inputs per prompt batch are ``env.examples_per_reward``."""

    target: str | None = None  # target style; None: the task's (yelp: positive, shakespeare: modern)
    # Rewrites sampled per (prompt, input) for the training reward; the best counts (RLPrompt). 1: greedy.
    samples: int = 4
    eval_samples: int = 1  # dev and test decoding: 1 = greedy; N = the best of N samples by the reward
    top_k: int = 10  # sampling among the k likeliest tokens (RLPrompt: 10)
    max_new_tokens: int = 24  # a rewrite ends at its closing quote, or here
    dev_inputs: int = 32  # source-style sentences the prompt is chosen on
    test_inputs: int | None = None  # test sentences evaluated; None: all (yelp: 500, shakespeare: 1,462)

    def __post_init__(self) -> None:
        at_least_one("style", samples=self.samples, eval_samples=self.eval_samples, top_k=self.top_k,
                     max_new_tokens=self.max_new_tokens, dev_inputs=self.dev_inputs,
                     test_inputs=self.test_inputs)  # fmt: skip


@dataclasses.dataclass
class RayConfig:
    """``executor: ray``: where the Ray cluster is and what each run asks of it."""

    address: str | None = None  # a running cluster (ray://host:10001, host:6379, auto); None: $RAY_ADDRESS,
    # else a Ray instance started on this machine for the grid
    num_cpus: int | None = None  # the CPUs a Ray instance started here may use; None: all of them
    gpus_per_run: float = 0.0  # GPUs (or a fraction) each run asks for

    def __post_init__(self) -> None:
        at_least_one("ray", num_cpus=self.num_cpus)
        if self.gpus_per_run < 0:
            raise ValueError(f"'ray.gpus_per_run' must be at least 0, got {self.gpus_per_run}")


CalibrationName = typing.Literal["none", "batch", "contextual", "domain"]  # rlprompt.calibration's, for runs
METHOD_NAMES = tuple(METHODS)
MethodName = typing.Literal[METHOD_NAMES]  # the registry's names (rlprompt/registry.py)


@dataclasses.dataclass
class CoreConfig:
    """The settings every run has; :data:`TrainConfig` adds one section per method that has settings."""

    model: str = "smollm2-135m"  # the frozen task LM
    # Where the task LM and the policy's backbone run, and in what precision: auto is the first GPU in
    # bfloat16, else the CPU, in bfloat16 where it computes in bf16 natively (AVX512-BF16, AMX) and in
    # float32 elsewhere (see rlprompt.models.resolve_dtype). config.yaml records what auto resolved to.
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: typing.Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    method: MethodName = "rl"  # one method; see `methods` for several
    methods: list[MethodName] = dataclasses.field(default_factory=list)  # several: a comparison report
    seed: int = 0
    seeds: list[int] = dataclasses.field(default_factory=list)  # several seeds; empty: just `seed`
    total_timesteps: int = (
        16_000  # rl: env steps (prompt tokens written); prompts = total_timesteps / prompt_length
    )
    evaluations: int = 20  # dev evaluations spread evenly over every method's training (plus one at start)
    # Which checkpoint a gradient method (soft prompt, prefix tuning, LoRA, IA3, full fine-tuning) keeps, from
    # its dev evaluations: dev_accuracy (the earliest best), dev_accuracy_then_loss (the dev cross-entropy
    # breaks ties, as the gap reward does for rl's prompts and the training loss for bbt's) or dev_loss.
    checkpoint_rule: typing.Literal["dev_accuracy", "dev_accuracy_then_loss", "dev_loss"] = "dev_accuracy"
    # Checkpoints (for --resume) in each method's own steps (rl: env steps; tuning: optimizer steps);
    # None: after every dev evaluation; 0: none at those points. A stop request (Ctrl-C, SIGTERM) and the
    # end of training always write one (full_finetune writes one on a stop request only: it holds every
    # weight four times over).
    checkpoint_every: int | None = None
    candidates_per_eval: int = 4  # rl: best training prompts since the last evaluation also tried on dev
    # rl and search also report the mean test score of their top_k_report prompts by dev (RLPrompt reports
    # the top 3's); the chosen prompt is one of them (rl.prompt_rule, search.prompt_rule). 1: only the
    # chosen prompt is tested, and there is nothing to choose from but the best by dev accuracy.
    top_k_report: int = 3
    # rl and search: the artifact is the ensemble of the chosen prompt and the next best by dev, `ensemble`
    # in all (at most top_k_report): each input's label is the argmax of their mean calibrated label
    # log-probabilities (each renormalised over the classes: a geometric mean), the headline dev and test
    # figures are the ensemble's, and prompt.json lists its prompts (readable text; rlprompt.evaluate and
    # rlprompt.transfer score them as one). 1: the chosen prompt alone.
    ensemble: int = 1
    # Remove each prompt's label prior from its scores (rlprompt/calibration.py) in the RL reward, on dev
    # (choosing the prompt or checkpoint) and in the headline test figure; reports show raw and calibrated.
    # Measured on the quickstart, seeds 0-4: the calibrated reward's prompts score 0.776 +- 0.036 calibrated
    # test accuracy against 0.737 +- 0.029 for the raw reward's (README, "Quickstart results").
    calibration: CalibrationName = "batch"
    # Stop a method that queries a reward (rl, search, bbt) once this many (prompt, example) pairs are scored,
    # training and dev: one budget for all of them, since prompts written again cost nothing. None: no limit.
    max_reward_queries: int | None = None
    manual_prompt: str | None = None  # reference prompt for the summary; None: the task's
    manual_prompts: list[str] = dataclasses.field(default_factory=list)  # `manual` method: best on dev wins
    heldout_sentences: int = 200  # general sentences for the forgetting (perplexity) check
    output_dir: str = "runs"  # on storage every Ray worker can reach when the grid runs on a cluster
    # Where a grid's runs execute: "local" (one after another in this process) or "ray" (each run a Ray
    # task, several at once; README "Grids on a cluster"; an optional extra: pip install 'rlprompt[ray]').
    executor: typing.Literal["local", "ray"] = "local"
    # torch threads each run uses (ray: the CPUs each task asks for); None: torch's default here, 1 on Ray.
    # The same number gives the same results on either executor.
    threads_per_run: int | None = None
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    vocab: VocabConfig = dataclasses.field(default_factory=VocabConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    style: StyleConfig = dataclasses.field(default_factory=StyleConfig)

    @property
    def method_list(self) -> list[str]:
        return list(dict.fromkeys(self.methods or [self.method]))

    def reward_query_budget(self, method: str) -> int | None:
        """The (prompt, example) pairs ``method`` may score: ``rl.max_reward_queries`` for RL when set, else
        the top-level ``max_reward_queries``."""
        if method == "rl" and self.rl.max_reward_queries is not None:
            return self.rl.max_reward_queries
        return self.max_reward_queries

    @property
    def seed_list(self) -> list[int]:
        return list(dict.fromkeys(self.seeds or [self.seed]))

    def manual_prompt_for(self, task) -> str:
        """The reference prompt: ``manual_prompt`` when set, else the task's own."""
        return self.manual_prompt if self.manual_prompt is not None else task.manual_prompt

    def __post_init__(self) -> None:
        at_least_one("", total_timesteps=self.total_timesteps, evaluations=self.evaluations,
                     heldout_sentences=self.heldout_sentences, threads_per_run=self.threads_per_run,
                     max_reward_queries=self.max_reward_queries, top_k_report=self.top_k_report,
                     ensemble=self.ensemble)  # fmt: skip
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ValueError(
                f"'checkpoint_every' must be 0 (none during training) or more, got {self.checkpoint_every}"
            )
        for key, values in (("seed", [self.seed]), ("seeds", self.seeds)):
            for value in values:
                if not 0 <= value < 2**32:  # numpy's and SB3's seeds
                    raise ValueError(f"'{key}' must be between 0 and {2**32 - 1}, got {value}")
        if self.task.demonstrations and "in_context" in (self.methods or [self.method]):
            raise ValueError(
                f"method 'in_context' with 'task.demonstrations' ({self.task.demonstrations}): the template "
                "already puts demonstrations before each input, so compare with 'manual'"
            )
        if self.ensemble > self.top_k_report:
            raise ValueError(
                f"'ensemble' ({self.ensemble}) is more than 'top_k_report' ({self.top_k_report}): the "
                "ensemble's prompts are the reported top ones; raise top_k_report to at least "
                f"{self.ensemble}"
            )


def _method_sections() -> list[tuple[str, type, dataclasses.Field]]:
    """One field per method section the registry names, typed by the method module's settings class."""
    fields = []
    for spec in METHODS.values():
        if spec.settings is None or any(name == spec.section for name, _, _ in fields):
            continue
        module, name = spec.settings.split(":")
        cls = getattr(importlib.import_module(module), name)
        fields.append((spec.section, cls, dataclasses.field(default_factory=cls)))
    return fields


# The run configuration: the core settings plus each method's section (rl, search, bbt, soft_prompt, ...),
# whose dataclass lives in the method's own module and checks its own values.
TrainConfig = dataclasses.make_dataclass("TrainConfig", _method_sections(), bases=(CoreConfig,))
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = "The run configuration: core settings (CoreConfig) and one section per method."


def _task_shorthand(data: dict) -> dict:
    """``task: my-task.yaml`` (or a built-in name) means ``task: {name: my-task.yaml}``."""
    if isinstance(data.get("task"), str):
        return {**data, "task": {"name": data["task"]}}
    return data


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping; ``base: other.yaml`` (relative to the file) starts from that file's settings,
    which this file's keys then override (sections merged key by key)."""
    path = Path(path)
    if path.resolve() in seen:
        raise RLPromptError(f"{path}: 'base' refers back to itself ({' -> '.join(map(str, seen))})")
    data = _task_shorthand(read_yaml(path))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RLPromptError(f"{path}: 'base' must be the path of another config file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise RLPromptError(f"{path}: base config {base_path} does not exist")
    return _merged(read_config_file(base_path, (*seen, path.resolve())), data)


# A key that names one of something replaces the base's list of them (a file that says `method: rl` over a
# base with `methods: [...]` means one method), and the other way round.
_ONE_OR_MANY = {"method": "methods", "seed": "seeds", "methods": "method", "seeds": "seed"}


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key in over:
        if key in _ONE_OR_MANY and _ONE_OR_MANY[key] not in over:
            out.pop(_ONE_OR_MANY[key], None)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    if isinstance(over.get("task"), dict):
        out["task"] = _words_stay_with_their_task(
            base.get("task"), out["task"], "verbalizers" in over["task"]
        )
    return out


def _words_stay_with_their_task(before, task, sets_words: bool):
    """Label words are chosen for one task: a config (or ``--set``) that names another task without setting
    words drops them, so that the task reads labels through its own (and a 4-class task is not handed 2)."""
    if isinstance(before, dict) and isinstance(task, dict) and not sets_words:
        if task.get("name") != before.get("name"):
            return {k: v for k, v in task.items() if k != "verbalizers"}
    return task


def load_train_config(path: str | None, overrides: list[str] | None = None):
    """The run configuration (a :data:`TrainConfig`) from a YAML file (or the defaults) and ``--set``
    overrides."""
    data = read_config_file(Path(path)) if path else {}
    if path and not data:
        raise RLPromptError(f"{path}: no settings in it; leave out --config for the defaults")
    data = _one_wins(data, overrides or [])
    sets_words = any(o.split("=", 1)[0].strip() == "task.verbalizers" for o in overrides or [])
    for item in overrides or []:  # one at a time: `task=my.yaml` then `task.seeds=...` keeps the name
        before = data.get("task")
        data = _task_shorthand(apply_overrides(data, [item], TrainConfig))
        if "task" in data:
            data["task"] = _words_stay_with_their_task(before, data["task"], sets_words)
    try:
        config = from_dict(TrainConfig, data, path or "--set")
    except RLPromptError as err:
        raise _blamed_on_override(err, path, overrides or []) from None
    # A task file by its absolute path: config.yaml and prompt.json record it, and --resume or evaluate
    # from another directory must find this file, not another task.yaml that happens to be there.
    config.task.name = recorded_task_name(config.task.name)
    # A model directory likewise (and so that Ray workers, which start elsewhere, find it too).
    config.model = recorded_model_name(config.model)
    if config.policy.backbone is not None:
        config.policy.backbone = recorded_model_name(config.policy.backbone)
    return config


def _blamed_on_override(err: RLPromptError, path: str | None, overrides: list[str]) -> RLPromptError:
    """An error about a key a ``--set`` gave names that ``--set`` (key and value), not the config file
    whose value it replaced, nor ``--set`` alone."""
    message, source = str(err), path or "--set"
    if not message.startswith(f"{source}: "):
        return err
    rest = message[len(source) + 2 :]
    for item in reversed(overrides):  # the last --set of a key is the one that holds
        if rest.startswith(f"'{item.split('=', 1)[0].strip()}'"):
            return RLPromptError(f"--set {item.strip()}: {rest}")
    return err


# Settings added after runs were written whose new default changes what a run exports: a run's config.yaml
# without the key (written before it existed) resumes with the value the run began with.
ADDED_SINCE = {"rl.prompt_rule": "dev_accuracy"}


def load_resumed_config(path: Path, overrides: list[str]):
    """A run's own config.yaml for ``--resume`` (:func:`load_train_config`), each key of
    :data:`ADDED_SINCE` that the file lacks set as the run ran before it existed."""
    data = read_config_file(path)
    if not data:
        raise RLPromptError(
            f"{path}: empty; a run's config.yaml holds the settings it was started with, and --resume "
            "needs them"
        )
    older = []
    for key, value in ADDED_SINCE.items():
        section, _, name = key.partition(".")
        if not isinstance(data.get(section), dict) or name not in data[section]:
            older.append(f"{key}={value}")
    return load_train_config(str(path), [*older, *overrides])


def overrides_mapping(overrides: list[str]) -> dict:
    """``--set`` overrides as the mapping a config file with those keys would hold, checked as
    :func:`load_train_config` checks them: for a tool that writes a config (``base:`` the one it was given)
    which must repeat the settings it was run with. ``task=NAME`` is refused: on the command line it replaces
    the base's whole task section, where a file's task section is merged with its base's."""
    data: dict = {}
    for item in overrides:
        key, equals, value = item.partition("=")
        if key.strip() == "task" and equals:  # without "=", apply_overrides says what --set expects
            raise RLPromptError(
                f"--set {item}: a written config would merge this task with its base's task settings; "
                f"set task.name={value.strip()} (and the task's other keys) instead"
            )
        data = apply_overrides(data, [item], TrainConfig)
    return data


def _one_wins(data: dict, overrides: list[str]) -> dict:
    """``--set seed=1`` (``method``, ``task.seed``) over a file's list of them (``seeds``...) means that one:
    the list is dropped unless it is set too."""
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    data = copy.deepcopy(data)
    for one, many in (("seed", "seeds"), ("method", "methods")):
        if one in keys and many not in keys:
            data.pop(many, None)
    if "task.seed" in keys and "task.seeds" not in keys and isinstance(data.get("task"), dict):
        data["task"].pop("seeds", None)
    return data
