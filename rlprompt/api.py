"""The Python entry point: learn a prompt (or run a comparison) from a notebook or a script.

    import rlprompt

    prompt = rlprompt.learn(model="smollm2-135m", task="sst-2", total_timesteps=4000)
    prompt.text, prompt.metrics["test_accuracy"], prompt.run_dir

It runs the same driver as ``python -m rlprompt.train`` (same checks, progress bar, run directory and
outputs) and raises :class:`rlprompt.errors.RLPromptError` with the message the command prints.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import yaml

from rlprompt.errors import RLPromptError
from rlprompt.export import LearnedPrompt
from rlprompt.files import atomic_write_bytes
from rlprompt.registry import METHODS

Rows = Sequence[tuple[str, object]]
PROMPT_METHODS = tuple(name for name, spec in METHODS.items() if spec.writes_prompt)


def learn(
    model: str | None = None,
    task: str | Path | None = None,
    method: str | None = None,
    *,
    examples: Mapping[str, Rows] | None = None,
    verbalizers: Mapping[object, str] | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, object] | Sequence[str] | None = (),
    run_dir: str | Path | None = None,
    progress: bool = True,
    **settings,
) -> LearnedPrompt:
    """Learn a discrete prompt for ``task`` on ``model`` with ``method``; returns the exported prompt (what
    :func:`rlprompt.load_prompt` reads) with ``run_dir`` and ``result`` (the run's
    :class:`rlprompt.metrics.MethodResult`) attached.

    ``model``, ``task`` and ``method``, when given, take precedence over ``config`` and ``overrides``;
    left out, those decide, else the defaults: ``smollm2-135m``, ``sst-2``, ``rl``.

    Args:
        model: the task LM (an alias, a local directory, a cached hub id or ``openai:<base URL>``).
        task: a built-in task name or a task YAML file; ignored when ``examples`` are given.
        method: a method that writes a text prompt: ``rl`` (default), ``search``, ``manual`` or
            ``in_context`` (the weight methods run through :func:`rlprompt.driver.train` or the
            ``rlprompt train`` command).
        examples: an in-memory task: ``{"train": [(text, label), ...], "dev": [...], "test": [...]}``.
            They are written into the run directory (``task/``), so ``--resume`` works on it.
        verbalizers: the label word of each label value (with ``examples``), e.g. ``{0: "terrible",
            1: "great"}``.
        config: a YAML run config to start from (as ``--config``).
        overrides: ``{"rl.learning_rate": 1e-4}`` or ``["rl.learning_rate=1e-4"]`` (as ``--set``).
        run_dir: where to write the run (default: a new directory under ``output_dir``); not one that
            holds files already (``rlprompt train --resume DIR`` continues a run).
        progress: show the progress bar (the run's one-line summary is printed either way, as with
            ``--quiet``).
        **settings: top-level config keys, e.g. ``total_timesteps=4000, seed=1``.
    """
    from rlprompt.config import load_train_config
    from rlprompt.driver import train

    if method is not None:
        _check_prompt_method(method)
    pairs = _override_list(overrides, "overrides") + _override_list(settings, "settings")
    pairs += [f"{key}={_yaml_value(str(value))}" for key, value in (("model", model), ("method", method))
              if value is not None]  # fmt: skip
    if run_dir is not None:
        run_dir = Path(run_dir)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise RLPromptError(
                f"run_dir {run_dir}: exists and is not empty; give a new directory (`rlprompt train --resume "
                f"{run_dir}` continues a run there)"
            )
    written = None  # the run directory this call made for examples: removed again if nothing runs
    try:
        if examples is not None:
            run_dir = run_dir if run_dir is not None else _new_dir(pairs, config)
            written = run_dir
            task = write_examples_task(run_dir / "task", examples, verbalizers)
        if task is not None:
            pairs.append(f"task.name={_yaml_value(str(task))}")
        loaded = load_train_config(str(config) if config is not None else None, pairs)
        if len(loaded.method_list) != 1 or len(loaded.seed_list) != 1 or len(loaded.task.seed_list) != 1:
            raise RLPromptError(
                "learn() runs one method on one seed and data split; for a grid use `rlprompt train`"
            )
        _check_prompt_method(loaded.method_list[0])
        out = train(loaded, progress=progress, run_dir=run_dir)
    except BaseException:
        if written is not None and written.is_dir() and {p.name for p in written.iterdir()} <= {"task"}:
            shutil.rmtree(written)  # nothing but the examples: the call failed before the run began
        raise
    from rlprompt.export import load_prompt

    prompt = load_prompt(Path(out["run_dir"]) / "prompt.json")
    prompt.run_dir = Path(out["run_dir"])  # plain attributes: not part of the saved prompt
    prompt.result = out["results"][0]
    return prompt


def _check_prompt_method(method: str) -> None:
    if method not in PROMPT_METHODS:
        raise RLPromptError(
            f"learn() returns a text prompt, and method {method!r} does not write one; choose one of "
            f"{', '.join(PROMPT_METHODS)}, or run it with rlprompt.driver.train(config) or `rlprompt train`"
        )


def write_examples_task(directory: Path, examples: Mapping[str, Rows], verbalizers) -> Path:
    """An in-memory task as files (one JSONL per split and a task.yaml); returns the task.yaml."""
    import json

    from rlprompt.tasks import label_key

    if not isinstance(examples, Mapping) or not examples:
        raise RLPromptError(
            "examples must map split names (train, dev, test) to lists of (text, label) pairs"
        )
    unknown = sorted(set(examples) - {"train", "dev", "test"})
    if unknown:
        raise RLPromptError(f"examples: unknown split {unknown[0]!r}; the splits are train, dev and test")
    if not verbalizers:
        raise RLPromptError("examples need verbalizers: the label word of each label value")
    if not isinstance(verbalizers, Mapping):
        raise RLPromptError(
            f"verbalizers must map each label value to its label word, e.g. {{0: 'terrible', 1: 'great'}}; "
            f"got a {type(verbalizers).__name__}"
        )
    missing = [split for split in ("train", "dev", "test") if split not in examples]
    if missing:
        raise RLPromptError(f"examples: no {missing[0]!r} split; learn() needs train, dev and test")
    if len({label_key(k) for k in verbalizers}) < len(verbalizers):  # 1 and "1" would be one label
        raise RLPromptError(
            f"verbalizers {dict(verbalizers)!r} give a label value twice (as text they are equal)"
        )
    for label, word in verbalizers.items():
        if not isinstance(word, str) or not word.strip():
            raise RLPromptError(
                f"verbalizers[{label!r}]: the label word must be non-empty text, got {word!r}"
            )
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"name": directory.parent.name or "examples", "text_column": "text", "label_column": "label",
            "verbalizers": {str(k): str(v) for k, v in verbalizers.items()}}  # fmt: skip
    for split, rows in examples.items():
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise RLPromptError(
                f"examples[{split!r}] must be a list of (text, label) pairs, got {type(rows).__name__}"
            )
        lines = []
        for i, row in enumerate(rows):
            try:
                text, label = row
            except (TypeError, ValueError):
                raise RLPromptError(
                    f"examples[{split!r}][{i}]: expected a (text, label) pair, got {row!r}"
                ) from None
            if not isinstance(text, str):  # None or NaN would be learned as the words "None", "nan"
                raise RLPromptError(f"examples[{split!r}][{i}]: the text must be a string, got {text!r}")
            lines.append(json.dumps({"text": text, "label": str(label)}, ensure_ascii=False))
        atomic_write_bytes(directory / f"{split}.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
        spec[split] = f"{split}.jsonl"
    path = directory / "task.yaml"
    atomic_write_bytes(path, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).encode("utf-8"))
    return path


def _override_list(overrides, name: str) -> list[str]:
    """``key=value`` items for ``--set``: from a mapping (values as Python gives them), a list of such
    strings, or one such string."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={_yaml_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, Sequence):
        raise RLPromptError(
            f"{name} must be a mapping ({{'rl.learning_rate': 1e-4}}) or a list of 'key=value' strings, "
            f"got {type(overrides).__name__}"
        )
    return [str(item) for item in overrides]


def _yaml_value(value) -> str:
    """A value as ``--set`` text (YAML) that reads back as that value: a string stays that string ('Yes',
    '1.50' and '#1 movie:' included), lists and None survive."""
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _new_dir(pairs: list[str], config) -> Path:
    from rlprompt.config import load_train_config

    output = load_train_config(str(config) if config is not None else None,
                               [p for p in pairs if not p.startswith("task.")]).output_dir  # fmt: skip
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    method = next((p.split("=", 1)[1] for p in pairs if p.startswith("method=")), "rl")
    base = Path(output) / f"examples__{re.sub(r'[^A-Za-z0-9._-]+', '-', method)}__{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = Path(f"{base}-{n}")
    return run_dir
