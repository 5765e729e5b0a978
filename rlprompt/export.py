"""Exported discrete prompts: a versioned ``prompt.json`` and the API that reads it back.

``rlprompt.load_prompt(path)`` gives a :class:`LearnedPrompt` that fills templates for any model: on the
model it was learned on it keeps its exact token ids; elsewhere it is re-tokenized from its text.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

from rlprompt.errors import RLPromptError
from rlprompt.files import atomic_write_bytes
from rlprompt.registry import ARTIFACTS, METHODS, methods_with_artifact

FORMAT = "rlprompt.prompt"
# Version 2 added the policy's model and token ids (it may tokenize differently from the task model) and
# the calibration the prompt was chosen with; version 1 files still load (those fields take defaults).
VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass
class LearnedPrompt:
    text: str
    token_ids: list[int]  # in the task model's tokenizer
    model: str  # the model (and tokenizer) the prompt was learned on
    model_kind: str
    template: str
    verbalizers: list[str]
    task: str
    method: str
    seed: int
    class_names: list[str] = field(default_factory=list)
    data_seed: str | None = None
    task_source: str | None = None  # how to load the task again: a built-in name or a task YAML path
    # task.test_examples: the metrics' test split was this many examples drawn with seed 0
    # (tasks.sampled_test); evaluate draws the same by default. None: the whole split.
    test_examples: int | None = None
    metrics: dict = field(default_factory=dict)
    # How the prompt's scores were calibrated when it was chosen (rlprompt.calibration); evaluating it
    # elsewhere re-estimates the prior on that model with the same method.
    calibration: str = "none"
    policy_model: str | None = None  # the policy's backbone, whose tokens the prompt was written in
    policy_token_ids: list[int] | None = None  # the prompt in the policy's tokenizer
    library_version: str = ""
    task_kind: str | None = None  # rlprompt.registry.TASK_KINDS; None in files written before it was recorded
    # An ensemble of prompts (config `ensemble` > 1): each {"text", "token_ids"}, the chosen prompt (text,
    # token_ids above) first; an input's label is the argmax of their mean calibrated label
    # log-probabilities, each renormalised over the classes. Empty: the prompt alone.
    ensemble: list[dict] = field(default_factory=list)
    # Each prompt's (the chosen one, then the ensemble's others) log label prior on ``model`` as
    # ``calibration`` estimated it, one value a class: a calibrated score is a label word's log-prob minus
    # its prior. Empty: raw scores, a transductive prior, or a file from before priors were recorded.
    priors: list[list[float]] = field(default_factory=list)
    format: str = FORMAT
    version: int = VERSION

    @property
    def is_rewriting(self) -> bool:
        """A style-transfer prompt (it makes the model rewrite a sentence). Files from before the kind was
        recorded tell it by their empty verbalizers."""
        if self.task_kind is not None:
            return self.task_kind == "style"
        return not self.verbalizers

    def template_for(self, kind: str) -> str:
        """The prompt's own template on a model of its kind; RLPrompt's default for the other kind."""
        from rlprompt.templates import DEFAULT_TEMPLATES

        return self.template if kind == self.model_kind else DEFAULT_TEMPLATES[kind]

    def prompt_for(self, model_name: str) -> str | tuple[int, ...]:
        """What to give the Scorer on ``model_name``: the exact ids on the source model, else the text."""
        return tuple(self.token_ids) if same_model(model_name, self.model) else self.text.strip()

    def members_for(self, model_name: str) -> list[str | tuple[int, ...]]:
        """The prompts the artifact is, each as :meth:`prompt_for` gives it: an ensemble's prompts, else
        the prompt alone."""
        if not self.ensemble:
            return [self.prompt_for(model_name)]
        own = same_model(model_name, self.model)
        return [tuple(p["token_ids"]) if own else p["text"].strip() for p in self.ensemble]

    def top_prompts_for(self, model_name: str, k: int) -> list[str | tuple[int, ...]]:
        """The chosen prompt and the next best prompts of the run by dev (``metrics.top_k_prompts``, by dev
        accuracy, where rl's chosen one may come later), ``k`` in all, each as :meth:`prompt_for` gives it;
        just the chosen one when the file lists none."""
        top = self.metrics.get("top_k_prompts") or []
        chosen = next((i for i, p in enumerate(top) if p["token_ids"] == self.token_ids), None)
        others = [p for i, p in enumerate(top) if i != chosen]
        own = same_model(model_name, self.model)
        return [self.prompt_for(model_name)] + [
            tuple(p["token_ids"]) if own else p["text"].strip() for p in others[: k - 1]
        ]

    def fill(self, sentence: str, kind: str | None = None, label: str | None = None, member: int = 0) -> str:
        """The filled template as text, e.g. to paste into another tool: a causal model's input ends where
        the label word would come (its next-token log-probs of the label words decide); a masked model's
        holds ``label`` at the label slot (pass its mask token, e.g. ``"[MASK]"`` for BERT; default
        ``<mask>``). ``member``: which of an ensemble's prompts (0, the chosen one, is ``text``)."""
        from rlprompt.templates import Template

        prompts = [p["text"] for p in self.ensemble] or [self.text]
        if not 0 <= member < len(prompts):
            raise RLPromptError(f"member {member}: the prompt file holds {len(prompts)} prompt(s)")
        if self.is_rewriting:  # '{prompt} "{sentence}" "': the model writes the rewrite after the open quote
            # The text as learned: its leading space is its first token's (" sort", not "sort")
            return self.template.format(prompt=prompts[member], sentence=sentence)
        text = prompts[member].strip()
        kind = kind or self.model_kind
        template = Template.parse(self.template_for(kind), kind)
        if kind == "causal":
            return template.fill_text(sentence, text, "" if label is None else label).rstrip(" ")
        return template.fill_text(sentence, text, "<mask>" if label is None else label)

    def classify(
        self, sentences: list[str], model: str | None = None, device: str = "auto", dtype: str = "auto",
        calibration: str | None = None,
    ) -> list[str]:  # fmt: skip
        """The class name of each of ``sentences`` by the prompt (an ensemble: its rule, the argmax of the
        members' mean renormalised calibrated label log-probabilities), scored on ``model`` (default: the
        one it was learned on) as ``rlprompt.evaluate`` scores it: with the prompt's template and label
        words, calibrated by its ``calibration`` (``calibration`` overrides it). On the model it was learned
        on, the recorded ``priors`` serve; elsewhere (or in a file without them) each prompt's prior is
        re-estimated on that model, which for batch or domain calibration needs the task's inputs (its
        file, for a user task)."""
        import numpy as np

        from rlprompt.backends import load_task_model, make_label_scorer
        from rlprompt.calibration import (
            calibrate,
            check_calibration,
            ensemble_scores,
            scorer_prior,
            task_calibration,
        )
        from rlprompt.scoring import prompt_budget
        from rlprompt.tasks import Example, load_task

        if self.is_rewriting:
            raise RLPromptError(f"a style-transfer prompt ({self.task}) rewrites; it does not classify")
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise RLPromptError("classify() takes a list of sentences (strings)")
        if not sentences:
            return []
        lm = load_task_model(model or self.model, device, dtype)
        members = self.members_for(lm.name)
        scorer = make_label_scorer(lm, self.template_for(lm.kind), self.verbalizers,
                                   prompt_budget=prompt_budget(lm, members))  # fmt: skip
        examples = [Example(f"input:{text}", text, 0) for text in dict.fromkeys(sentences)]
        logprobs = scorer.score(members, examples)
        method = check_calibration(calibration or self.calibration)
        if self.priors and same_model(lm.name, self.model) and method == self.calibration:
            prior = np.array(self.priors, dtype=np.float32)  # as the run estimated them on this model
        else:
            task = None
            if method in ("batch", "domain"):  # their prior comes from the task's unlabelled inputs
                try:
                    task = load_task(own_task(self), self.data_seed or "16-100")
                except RLPromptError as err:
                    raise RLPromptError(
                        f"classify() on {lm.name} re-estimates the prompt's {method} prior from its task's "
                        f"unlabelled inputs, and the task does not load ({err}); pass "
                        "calibration='contextual' (content-free inputs), 'transductive' (the sentences "
                        "given) or 'none'"
                    ) from None
            reference = task_calibration(method, task) if method != "none" else None
            prior = scorer_prior(scorer, members, reference, examples)
        scores = ensemble_scores(calibrate(logprobs, prior))
        names = self.class_names or self.verbalizers
        by_text = {ex.text: names[int(i)] for ex, i in zip(examples, np.argmax(scores, axis=1), strict=True)}
        return [by_text[text] for text in sentences]

    def rewrite(
        self, sentences: list[str], model: str | None = None, samples: int | None = None,
        seed: int | None = None, device: str = "auto", dtype: str = "auto", progress: bool = False,
    ) -> list[str]:  # fmt: skip
        """One rewrite of each of ``sentences`` by a style-transfer prompt, decoded as its run's test was:
        greedy, or the best of ``samples`` sampled rewrites by the task's reward (content similarity plus
        the target style's probability, from the task's cached style classifier). ``samples`` (1: greedy)
        and ``seed`` default to the run's, so the run's test sentences, in order, get its ``rewrites.tsv``
        back. Sampling draws for 64 sentences at a time, seeded by their position: a sampled rewrite
        depends on the sentences before it. ``model``: another causal model (the prompt's text is
        re-tokenized there). ``progress``: a bar on stderr."""
        from tqdm.auto import tqdm

        from rlprompt.backends import load_task_model
        from rlprompt.style.rewriter import Rewriter, evaluation_rewrites

        if not self.is_rewriting:
            raise RLPromptError(f"a classification prompt ({self.task}) classifies; use classify()")
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise RLPromptError("rewrite() takes a list of sentences (strings)")
        if any(not s.strip() for s in sentences):
            raise RLPromptError(
                f"rewrite(): sentence {[s.strip() for s in sentences].index('') + 1} is empty"
            )
        decoding = self.metrics.get("rewriting") or {}  # files from before it was recorded: the defaults
        samples = decoding.get("eval_samples", 1) if samples is None else samples
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise RLPromptError(f"samples: a number of rewrites to choose from, 1 or more, not {samples!r}")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31
        ):
            raise RLPromptError(f"seed: a whole number from 0 to 2**31 - 1, not {seed!r}")
        if not sentences:
            return []
        lm = load_task_model(model or self.model, device, dtype)
        rewriter = Rewriter(lm, **{k: decoding[k] for k in ("top_k", "max_new_tokens") if k in decoding})
        reward = self._style_reward(decoding.get("target")) if samples > 1 else None
        with tqdm(total=len(sentences), desc="rewrites", unit="sentence", disable=not progress) as bar:
            return evaluation_rewrites(rewriter, reward, self.prompt_for(lm.name), list(sentences), samples,
                                       self.seed if seed is None else seed, bar)  # fmt: skip

    def _style_reward(self, target: str | None):
        """The reward that picks the best of sampled rewrites: the task's, toward the prompt's target style
        (recorded, or read from the run's direction, "negative → positive")."""
        from rlprompt.style.data import load_style_task
        from rlprompt.style.encoder import SentenceEncoder
        from rlprompt.style.reward import StyleReward

        if target is None and "→" in str(self.metrics.get("task_direction", "")):
            target = self.metrics["task_direction"].split("→")[-1].strip()
        task = load_style_task(self.task, self.data_seed, target)
        encoder = SentenceEncoder()
        return StyleReward(encoder, task.classifier(encoder), task.target)


def recorded_model_name(name: str) -> str:
    """How an artifact records the model it was made on: a local directory by its absolute path (``./gpt2``
    here and ``./gpt2`` elsewhere are different models, and a prompt's token ids hold on the first only);
    an alias, a hub id or a server as given."""
    from rlprompt.models import BUNDLES

    if name in BUNDLES:  # an alias wins over a directory of that name, as load_model resolves it
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def same_model(name: str, recorded: str) -> bool:
    """Whether the model ``name`` (as the user gives it) is the one an artifact records as ``recorded``
    (files from before absolute paths were recorded compare as before, from where they are read)."""
    return name == recorded or recorded_model_name(name) == recorded_model_name(recorded)


def save_prompt(prompt: LearnedPrompt, path: Path) -> None:
    """Write ``prompt.json`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(prompt), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def load_classification_prompt(path: str | Path) -> LearnedPrompt:
    """A prompt file for the tools that score labels (evaluate, transfer): a rewriting prompt is refused."""
    prompt = load_prompt(path)
    if prompt.is_rewriting:
        raise RLPromptError(
            f"{path}: a style-transfer prompt ({prompt.task}); it is evaluated by the training run that "
            "learned it (style_eval.json), and python -m rlprompt.rewrite applies it to new sentences, "
            "while this tool scores classification prompts"
        )
    return prompt


def load_prompt(path: str | Path) -> LearnedPrompt:
    """Read an exported prompt (a ``prompt.json``, or the run directory holding one), with clear errors for
    a missing, broken or foreign file."""
    from rlprompt.files import read_text

    path = Path(path)
    if path.is_dir():  # a run directory: its prompt.json
        if not (path / "prompt.json").is_file():
            raise RLPromptError(f"{path}: a directory without prompt.json (a prompt run's directory has one)")
        path = path / "prompt.json"
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RLPromptError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RLPromptError(f'{path}: not an rlprompt prompt file (no "format": "{FORMAT}")')
    if data.get("version") not in READABLE_VERSIONS:
        raise RLPromptError(
            f"{path}: prompt file version {data.get('version')!r}; this rlprompt reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    from rlprompt.calibration import CALIBRATIONS
    from rlprompt.settings import from_dict

    known = set(LearnedPrompt.__dataclass_fields__)  # keys a later version adds are left out
    missing = [name for name, f in LearnedPrompt.__dataclass_fields__.items()
               if name not in data and f.default is MISSING and f.default_factory is MISSING]  # fmt: skip
    if missing:
        raise RLPromptError(f"{path}: incomplete prompt file (no {', '.join(repr(m) for m in missing)})")
    prompt = from_dict(LearnedPrompt, {k: v for k, v in data.items() if k in known}, str(path))  # types
    if prompt.calibration not in CALIBRATIONS:
        raise RLPromptError(
            f"{path}: 'calibration' must be one of {', '.join(CALIBRATIONS)}, got {prompt.calibration!r}"
        )
    _check_prompts(path, "ensemble", prompt.ensemble)
    top = prompt.metrics.get("top_k_prompts")
    if top is not None:
        _check_prompts(path, "metrics.top_k_prompts", top if isinstance(top, list) else [top])
    for key in ("token_ids", "policy_token_ids"):
        if any(t < 0 for t in getattr(prompt, key) or []):
            raise RLPromptError(f"{path}: '{key}' must be token ids (0 or more), got {getattr(prompt, key)}")
    _check_consistent(path, prompt)  # after each field's own check: the first problem named is the plainest
    if prompt.is_rewriting and "rewriting" not in prompt.metrics:
        prompt.metrics["rewriting"] = _run_rewriting(path)
    return prompt


def _run_rewriting(path: Path) -> dict:
    """How a style run's test rewrote (``metrics.rewriting``, recorded since it existed), for a prompt
    file from before: its run's ``config.yaml`` beside it, where there; the defaults for what is not."""
    from rlprompt.files import read_yaml

    config = path.parent / "config.yaml"
    try:
        style = read_yaml(config).get("style") if config.is_file() else None
    except RLPromptError:  # unreadable, not UTF-8, not YAML, not a mapping: the defaults
        return {}
    kinds = {"target": str, "eval_samples": int, "top_k": int, "max_new_tokens": int}
    return {key: style[key] for key, kind in kinds.items()
            if isinstance(style, dict) and isinstance(style.get(key), kind)
            and not isinstance(style.get(key), bool)}  # fmt: skip


def _check_consistent(path: Path, prompt: LearnedPrompt) -> None:
    """Fields that must agree with each other: a hand-edited file that does not is refused, where it would
    otherwise score something else than it says (an empty prompt for a text whose ids were dropped, say)."""
    from rlprompt.registry import TASK_KINDS

    def bad(message: str) -> RLPromptError:
        return RLPromptError(f"{path}: {message}")

    if not isinstance(prompt.template, str):
        raise bad(f"'template' must be text, got {prompt.template!r}")
    if prompt.model_kind not in ("causal", "masked"):
        raise bad(f"'model_kind' must be 'causal' or 'masked', got {prompt.model_kind!r}")
    if prompt.task_kind is not None and prompt.task_kind not in TASK_KINDS:
        raise bad(f"'task_kind' must be one of {', '.join(TASK_KINDS)}, got {prompt.task_kind!r}")
    if prompt.text.strip() and not prompt.token_ids:
        raise bad(f"'token_ids' is empty, but 'text' is {prompt.text!r}: the ids are what the model reads")
    if prompt.ensemble:
        first = prompt.ensemble[0] if isinstance(prompt.ensemble[0], dict) else {}
        if first.get("text") != prompt.text or first.get("token_ids") != prompt.token_ids:
            raise bad("'ensemble[0]' must be the chosen prompt itself ('text' and 'token_ids')")
    if not prompt.is_rewriting:
        words = prompt.verbalizers
        if any(not isinstance(w, str) or not w.strip() for w in words) or len(set(words)) < len(words):
            raise bad(f"'verbalizers' must be distinct, non-empty words, got {words!r}")
        if prompt.class_names and len(prompt.class_names) != len(words):
            raise bad(
                f"{len(prompt.class_names)} 'class_names' for {len(words)} 'verbalizers': one word a class"
            )
    if prompt.priors:
        members = len(prompt.ensemble) or 1
        shapes = [len(row) if isinstance(row, list) else -1 for row in prompt.priors]
        if len(prompt.priors) != members or any(n != len(prompt.verbalizers) for n in shapes):
            n = len(prompt.verbalizers)
            raise bad(f"'priors' must hold {members} row(s) of {n} log-probs (a row a prompt)")
        values = [v for row in prompt.priors for v in row]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise bad("'priors' must hold numbers")
    if prompt.test_examples is not None and prompt.test_examples < 1:
        raise bad(f"'test_examples' must be at least 1 (or null), got {prompt.test_examples}")


def _check_prompts(path: Path, key: str, prompts: list) -> None:
    """An ensemble's or a top-k list's prompts: each a mapping with a text and its token ids."""
    for i, p in enumerate(prompts):
        ids = p.get("token_ids") if isinstance(p, dict) else None
        if not (isinstance(p, dict) and isinstance(p.get("text"), str) and isinstance(ids, list)
                and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)):  # fmt: skip
            raise RLPromptError(f"{path}: '{key}[{i}]' must hold a 'text' and its 'token_ids', got {p!r}")


# -- weight artifacts: soft prompts, LoRA, fine-tuned models --------------------------------------------

ADAPTER_META = "rlprompt_adapter.json"
# Where each weight method's export goes in its run directory, and the formats (rlprompt.registry).
ADAPTER_DIRS = {name: spec.export_dir for name, spec in METHODS.items() if spec.artifact != "prompt"}
SOFT_PROMPT_METHODS = methods_with_artifact("peft_prompt")  # PEFT prompt tuning, placed at the {prompt} slot
PEFT_WEIGHT_ADAPTERS = methods_with_artifact("peft_weights")  # merged into a copy of the model to evaluate


def save_adapter(
    method: str, run_dir: Path, *, lm, scorer, task, config, seed: int, manual_prompt: str,
    soft_prompt=None, wrapper=None, metrics: dict | None = None, calibration: str = "none",
) -> Path:  # fmt: skip
    """Export a trained baseline in its library's own format, plus ``rlprompt_adapter.json`` (template,
    verbalizers, task: what :func:`load_adapter` needs to evaluate it the way it was trained).

    * ``soft_prompt/``, ``bbt/``: PEFT prompt tuning (``PeftModel.from_pretrained(base, dir)`` loads
      it). Note that PEFT's own forward puts virtual tokens before the text; rlprompt places them at the
      template's ``{prompt}`` slot, as recorded in the metadata.
    * ``prefix_tuning/``, ``lora/``, ``ia3/``: PEFT adapters. * ``model/``: a whole fine-tuned model with its
      tokenizer.

    Written to a temporary directory and renamed into place: an interrupted export leaves nothing.
    """
    import shutil

    import torch

    from rlprompt.version import __version__

    run_dir = Path(run_dir)
    out = run_dir / ADAPTER_DIRS[method]
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{out.name}-"))
    try:
        if method in SOFT_PROMPT_METHODS:
            from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

            peft_config = PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM if lm.kind == "causal" else None,
                num_virtual_tokens=int(soft_prompt.shape[0]),
                prompt_tuning_init=PromptTuningInit.RANDOM,
            )
            # Wrapping for prompt tuning adds modules to the wrapper only; the shared model is unchanged.
            peft_model = (
                get_peft_model(lm.model, peft_config)
                if lm.kind == "causal"
                else PeftModel(lm.model, peft_config)
            )
            with torch.no_grad():
                peft_model.prompt_encoder["default"].embedding.weight.copy_(soft_prompt)
            peft_model.save_pretrained(tmp)
        elif METHODS[method].artifact in ("peft_weights", "peft_prefix"):
            wrapper.save_pretrained(tmp)
        else:
            wrapper.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
        meta = {
            "format": "rlprompt.adapter", "version": 1, "method": method,
            "model": recorded_model_name(lm.name),
            "model_kind": lm.kind, "template": scorer.template.text, "verbalizers": list(task.verbalizers),
            "class_names": list(task.class_names), "task": task.name, "task_source": config.task.name,
            "data_seed": config.task.seed, "seed": seed,
            "prompt": None if method in SOFT_PROMPT_METHODS else manual_prompt,
            "placement": ARTIFACTS[METHODS[method].artifact].placement,
            "metrics": metrics or {}, "calibration": calibration, "library_version": __version__,
        }  # fmt: skip
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_adapter_meta(path: str | Path) -> dict:
    """The metadata of an exported baseline directory, with clear errors for anything else."""
    path = Path(path)
    meta_file = path / ADAPTER_META
    if not path.is_dir():
        expected = ", ".join(d + "/" for d in ADAPTER_DIRS.values())
        raise RLPromptError(f"{path}: not a directory (expected an exported {expected})")
    if not meta_file.exists():
        raise RLPromptError(f"{path}: no {ADAPTER_META}; not a baseline exported by rlprompt.train")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RLPromptError(f"{meta_file}: not valid JSON ({err})") from None
    if meta.get("format") != "rlprompt.adapter" or meta.get("method") not in ADAPTER_DIRS:
        raise RLPromptError(f"{meta_file}: not an rlprompt adapter description")
    return meta


def own_task(source: LearnedPrompt | dict) -> str:
    """The task a prompt file (or an adapter's metadata) was trained on, as it loads again: its source."""
    if isinstance(source, dict):
        return source.get("task_source") or source["task"]
    return source.task_source or source.task


def recorded_task_name(name: str) -> str:
    """A task as runs record it (``config.load_train_config``): a task file by its resolved path, so that
    ``--task my/task.yaml`` here names the task a prompt file records; a built-in task by its name."""
    path = Path(name).expanduser()
    return str(path.resolve()) if name.endswith((".yaml", ".yml")) and path.is_file() else name


def recorded_label_words(
    sources: list[LearnedPrompt | dict], task_name: str, num_classes: int
) -> list[str] | None:
    """The label words the prompt files and adapters trained on ``task_name`` recorded (a run's
    ``task.verbalizers`` may have replaced the task's), for scoring them on that task; None where none
    recorded words for it. Different words, or a count that does not fit the task: a one-line error."""
    recorded = [s.verbalizers if isinstance(s, LearnedPrompt) else s.get("verbalizers") for s in sources
                if own_task(s) == task_name]  # fmt: skip
    words = {tuple(w) for w in recorded if w}
    if len(words) > 1:
        listed = " / ".join(" ".join(w) for w in sorted(words))
        raise RLPromptError(
            f"the prompt files and adapters for {task_name} read labels through different words ({listed}); "
            "evaluate them separately"
        )
    if not words:
        return None
    (only,) = words
    if len(only) != num_classes:
        raise RLPromptError(
            f"the prompt files and adapters for {task_name} record {len(only)} label words "
            f"({' '.join(only)}); the task has {num_classes} classes"
        )
    return list(only)
