"""Tasks: labelled examples, verbalizers and templates.

Built-in 16-shot tasks (``sst-2``, ``mr``, ``cr``, ``sst-5``, ``agnews``; five data seeds each) ship as
package data under ``rlprompt/data/few-shot`` (see its PROVENANCE.md). A user task is described by a
mapping (a YAML file, or the ``task:`` section of a run config) naming TSV, CSV or JSONL files::

    name: my-reviews
    train: data/train.tsv        # paths relative to the YAML file
    dev: data/dev.tsv
    test: data/test.jsonl
    text_column: review
    label_column: stars
    verbalizers: {1: terrible, 5: great}   # label value in the file -> label word
    template: "{sentence} {prompt}"        # optional; or templates: {causal: ..., masked: ...}
    manual_prompt: "It was"                # optional reference prompt
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from rlprompt.errors import RLPromptError
from rlprompt.files import read_text, read_yaml
from rlprompt.models import ModelKind
from rlprompt.registry import DEFAULT_KIND, TASK_KINDS, task_kind
from rlprompt.templates import DEFAULT_TEMPLATES

SPLITS = ("train", "dev", "test")
FEW_SHOT_SEEDS = ("16-100", "16-13", "16-21", "16-42", "16-87")
DEFAULT_SEED = "16-100"


@dataclass(frozen=True)
class Example:
    """One labelled input. ``uid`` is stable across runs; it keys the scorer's caches."""

    uid: str
    text: str
    label: int


@dataclass
class Task:
    """A classification task: examples per split, one verbalizer per class, templates per model kind."""

    name: str
    verbalizers: list[str]
    class_names: list[str]
    split_files: dict[str, Path]
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    label_map: dict[str, int] | None = None  # label value as read -> class id; None: values are ids
    templates: dict[str, str] = field(default_factory=dict)
    manual_prompt: str = "It was"
    plan: SplitPlan | None = None  # splits from one file's split column, or carved out of the training data
    test_limit: int | None = None  # task.test_examples: a fixed sample of the test split (sampled_test)
    _cache: dict[str, list[Example]] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    def template_for(self, kind: ModelKind) -> str:
        """The task's template for a model kind (RLPrompt's default unless the task overrides it)."""
        return self.templates.get(kind, DEFAULT_TEMPLATES[kind])

    def examples(self, split: str) -> list[Example]:
        """The examples of ``split`` (train, dev or test), read once."""
        if split not in SPLITS:
            raise RLPromptError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if self.plan is not None:
            if not self._cache:
                self._cache.update(self.plan.split(self))
                self._cache["test"] = sampled_test(self._cache["test"], self.test_limit)
            return self._cache[split]
        if split not in self.split_files:
            raise RLPromptError(f"task {self.name!r} has no {split} split")
        if split not in self._cache:
            examples = self._read(split, self.split_files[split])
            if split != "test":  # a test file may hold some classes only (to score one class, say)
                self.check_classes(split, examples, self.split_files[split])
            self._cache[split] = sampled_test(examples, self.test_limit) if split == "test" else examples
        return self._cache[split]

    def check_classes(self, split: str, examples: list[Example], source) -> None:
        """Every class must have examples in ``split``: a method cannot learn or choose on a class it never
        sees. ``source`` names the file for the error."""
        present = {ex.label for ex in examples}
        missing = [self.class_names[c] for c in range(self.num_classes) if c not in present]
        if missing:
            raise RLPromptError(f"{source}: class {missing[0]!r} has no examples in the {split} split")

    def training_examples(self, exclude=()) -> list[Example]:
        """The training split less the examples whose ids are in ``exclude`` (``task.exclude_train``):
        what the methods train on. Unknown ids are an error naming the first."""
        train = self.examples("train")
        if not exclude:
            return train
        known, excluded = {ex.uid for ex in train}, set(exclude)
        unknown = [uid for uid in exclude if uid not in known]
        if unknown:
            raise RLPromptError(
                f"task.exclude_train: {unknown[0]!r} is not a training example of {self.name} "
                f"(ids look like {train[0].uid!r})"
            )
        kept = [ex for ex in train if ex.uid not in excluded]
        if not kept:
            raise RLPromptError(f"task.exclude_train leaves no training examples of {self.name}")
        return kept

    @property
    def split_record(self) -> dict | None:
        """How a planned task's splits were made, and the ids in each (run directories keep it)."""
        if self.plan is None:
            return None
        return {**self.plan.describe(), "splits": {s: [ex.uid for ex in self.examples(s)] for s in SPLITS}}

    def _read(self, split: str, path: Path, split_column: str | None = None) -> list[Example]:
        return [ex for ex, _ in self._read_rows(split, path, split_column)]

    def _read_rows(self, split: str, path: Path, split_column: str | None = None):
        """(example, split-column value) per row of ``path``; ids name ``split`` and the line."""
        columns, rows = read_table(path)
        if split_column is not None and split_column not in columns:
            raise RLPromptError(f"{path}: no split column {split_column!r}; columns are {', '.join(columns)}")
        text_column = next((c for c in self.text_columns if c in columns), None)
        if text_column is None:
            raise RLPromptError(
                f"{path}: no text column {' or '.join(repr(c) for c in self.text_columns)}; "
                f"columns are {', '.join(columns)}"
            )
        if self.label_column not in columns:
            raise RLPromptError(
                f"{path}: no label column {self.label_column!r}; columns are {', '.join(columns)}"
            )
        examples = []
        for line, row in rows:
            value = label_key(row[self.label_column])
            label = self._label_id(value)
            if label is None:
                known = ", ".join(self.label_map) if self.label_map else f"0..{self.num_classes - 1}"
                raise RLPromptError(
                    f"{path}:{line}: label {value!r} has no verbalizer (labels with verbalizers: {known})"
                )
            text = row[text_column]
            if not isinstance(text, str):
                raise RLPromptError(f"{path}:{line}: text column {text_column!r} is not a string: {text!r}")
            where = label_key(row[split_column]) if split_column is not None else None
            examples.append((Example(uid=f"{self.name}/{split}/{line}", text=text, label=label), where))
        if not examples:
            raise RLPromptError(f"{path}: no examples (only a header)")
        return examples

    def _label_id(self, value: str) -> int | None:
        if self.label_map is not None:
            return self.label_map.get(value)
        if value.isdigit() and int(value) < self.num_classes:
            return int(value)
        return None


DEFAULT_SPLIT_NAMES = {"train": ["train"], "dev": ["dev", "validation", "valid", "val"], "test": ["test"]}


@dataclass
class SplitPlan:
    """Splits a user task makes itself: from one file's split column (``data`` + ``split_column``), and/or
    carved out of the training rows, stratified by class (``dev_size``, ``test_size``: a fraction of the
    training rows, or a count), with a seed of its own so that every run seed sees the same test set."""

    source: str  # the task file, for errors
    data: Path | None = None  # one file holding every row (with split_column: the splits too)
    split_column: str | None = None
    split_names: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_SPLIT_NAMES))
    dev_size: float | None = None
    test_size: float | None = None
    seed: int = 0

    def describe(self) -> dict:
        return {"data": str(self.data) if self.data else None, "split_column": self.split_column,
                "dev_size": self.dev_size, "test_size": self.test_size, "split_seed": self.seed}  # fmt: skip

    def split(self, task: Task) -> dict[str, list[Example]]:
        splits: dict[str, list[Example]] = {}
        if self.data is not None:
            rows = task._read_rows("data", self.data, self.split_column)
            if self.split_column is None:
                splits["train"] = [ex for ex, _ in rows]
            else:
                lookup = {name: split for split, names in self.split_names.items() for name in names}
                for ex, value in rows:
                    if value not in lookup:
                        line = ex.uid.rsplit("/", 1)[1]
                        known = ", ".join(sorted(lookup))
                        raise RLPromptError(f"{self.data}:{line}: split column {self.split_column!r} has the "
                                            f"value {value!r}; known split names: {known}")  # fmt: skip
                    splits.setdefault(lookup[value], []).append(ex)
        for split, path in task.split_files.items():
            if path != self.data:
                if split in splits:  # the split column gave it rows already: neither silently wins
                    raise RLPromptError(
                        f"{self.source}: the '{split}' file and the {split} rows of {self.data}'s split "
                        f"column {self.split_column!r} both give a {split} split; drop one of them"
                    )
                splits[split] = task._read(split, path)
        rng = np.random.default_rng(self.seed)
        for split, size in (("test", self.test_size), ("dev", self.dev_size)):
            if size is None:
                continue
            if split in splits:
                raise RLPromptError(f"{self.source}: '{split}_size' carves a {split} split, but the task "
                                    f"has one already; drop one of them")  # fmt: skip
            pool = splits.get("train", [])
            small = [c for c in range(task.num_classes) if sum(ex.label == c for ex in pool) < 2]
            if small:
                raise RLPromptError(
                    f"{self.source}: '{split}_size' would leave a split without class "
                    f"{task.class_names[small[0]]!r}: it has fewer than 2 training examples to share"
                )
            if size >= 1 and not task.num_classes <= size <= len(pool) - task.num_classes:
                raise RLPromptError(
                    f"{self.source}: '{split}_size' {size:g} cannot be carved out of {len(pool)} training "
                    f"rows of {task.num_classes} classes, keeping one of each class on both sides; give a "
                    f"count from {task.num_classes} to {len(pool) - task.num_classes}, or a fraction below 1"
                )
            splits["train"], splits[split] = _carve(pool, size, task.num_classes, rng)
        for split in SPLITS:
            if not splits.get(split):
                raise RLPromptError(
                    f"{self.source}: the task has no {split} examples; give a '{split}' file, a split column "
                    f"value for it, or '{split}_size' to carve it out of the training data"
                )
            task.check_classes(split, splits[split], self.source)
        return splits


def _carve(pool: list[Example], size: float, num_classes: int, rng) -> tuple[list[Example], list[Example]]:
    """Split ``pool`` into (kept, carved), stratified by class: per class, a ``size`` fraction, at least one,
    never all; a count (``size`` >= 1, which the caller checked can be met) exactly, shared over the classes
    in proportion to their rows by largest remainders within those bounds."""
    by_class: dict[int, list[Example]] = {}
    for ex in pool:
        by_class.setdefault(ex.label, []).append(ex)
    groups = list(by_class.values())
    if size < 1:
        counts = [min(len(m) - 1, max(1, round(len(m) * size))) for m in groups]
    else:
        shares = [len(m) * size / len(pool) for m in groups]
        counts = [min(len(m) - 1, max(1, int(share))) for m, share in zip(groups, shares, strict=True)]
        remainder = [share - int(share) for share in shares]
        order = sorted(range(len(groups)), key=lambda c: -remainder[c])  # largest remainder first
        while sum(counts) != int(size):
            step = 1 if sum(counts) < size else -1
            room = [c for c in order if 1 <= counts[c] + step <= len(groups[c]) - 1]
            counts[room[0] if step > 0 else room[-1]] += step
    carved: set[str] = set()
    for members, n in zip(groups, counts, strict=True):
        for i in rng.permutation(len(members))[:n]:
            carved.add(members[i].uid)
    return [ex for ex in pool if ex.uid not in carved], [ex for ex in pool if ex.uid in carved]


def label_key(value) -> str:
    """Labels compare as text: ``1``, ``"1"``, ``1.0`` and ``"1.0"`` from YAML, TSV or JSON all mean the
    same, as do YAML's ``true`` and a file's ``true`` or ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower()
    return re.sub(r"^([+-]?\d+)\.0+$", r"\1", text)  # a TSV's 5.0 is the YAML key 5


# -- built-in tasks --------------------------------------------------------------------------------

_SENTIMENT2 = ["terrible", "great"]
_BUILTIN: dict[str, dict] = {
    "sst-2": {"verbalizers": _SENTIMENT2},
    "mr": {"verbalizers": _SENTIMENT2},
    "cr": {"verbalizers": _SENTIMENT2},
    "sst-5": {"verbalizers": ["terrible", "bad", "okay", "good", "great"]},
    "agnews": {
        "verbalizers": ["World", "Sports", "Business", "Tech"],
        "class_names": ["world", "sports", "business", "tech"],
        "text_columns": ("text", "sentence"),  # train/dev say "text", test says "sentence"
        "templates": {"masked": "<mask> {prompt} {sentence}"},  # RLPrompt puts the label first for agnews
        "manual_prompt": "News:",
    },
}
BUILTIN_TASKS = tuple(_BUILTIN)


def data_root() -> Path:
    """The packaged few-shot data."""
    return Path(str(files("rlprompt") / "data" / "few-shot"))


def builtin_task(name: str, seed: str = DEFAULT_SEED) -> Task:
    """A built-in 16-shot task with one of its five data seeds (train/dev differ, test is shared)."""
    if name not in _BUILTIN:
        raise RLPromptError(f"unknown task {name!r}; built-in tasks are {', '.join(BUILTIN_TASKS)}")
    if seed not in FEW_SHOT_SEEDS:
        raise RLPromptError(
            f"unknown data seed {seed!r} for task {name!r}; choose one of {', '.join(FEW_SHOT_SEEDS)}"
        )
    spec = dict(_BUILTIN[name])
    root = data_root() / name
    verbalizers = spec.pop("verbalizers")
    class_names = spec.pop("class_names", None) or list(verbalizers)
    return Task(
        name=name,
        verbalizers=list(verbalizers),
        class_names=list(class_names),
        split_files={
            "train": root / seed / "train.tsv",
            "dev": root / seed / "dev.tsv",
            "test": root / "test.tsv",
        },
        **spec,
    )


# -- user tasks ------------------------------------------------------------------------------------

_USER_KEYS = {
    "name", "train", "dev", "test", "text_column", "label_column", "verbalizers", "template", "templates",
    "manual_prompt", "data", "split_column", "split_names", "dev_size", "test_size", "split_seed",
}  # fmt: skip


def task_from_spec(spec: dict, base_dir: Path, source: str) -> Task:
    """A user task from a mapping (see the module docstring); ``source`` names it in errors."""
    if not isinstance(spec, dict):
        raise RLPromptError(f"{source}: a task must be a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _USER_KEYS)
    if unknown:
        raise RLPromptError(
            f"{source}: unknown task key {unknown[0]!r}; known keys: {', '.join(sorted(_USER_KEYS))}"
        )
    verbalizers = spec.get("verbalizers")
    if not isinstance(verbalizers, dict) or not verbalizers:
        raise RLPromptError(
            f"{source}: 'verbalizers' must map each label value to a word, e.g. {{0: terrible, 1: great}}"
        )
    words = []
    for label, word in verbalizers.items():
        if not isinstance(word, str) or not word.strip():
            raise RLPromptError(
                f"{source}: verbalizer for label {label!r} must be a non-empty word, got {word!r}"
            )
        words.append(word.strip())
    given, keys = list(verbalizers), [label_key(k) for k in verbalizers]
    same = next(((given[keys.index(k)], given[i]) for i, k in enumerate(keys) if keys.index(k) < i), None)
    if same is not None:
        raise RLPromptError(
            f"{source}: verbalizers {same[0]!r} and {same[1]!r} are the same label value; give each "
            "label once"
        )
    if len(keys) < 2:
        raise RLPromptError(
            f"{source}: 'verbalizers' names one label ({keys[0]!r}); a classification task needs at least two"
        )
    split_files = {}
    for split in SPLITS:
        if spec.get(split) is not None:
            if not isinstance(spec[split], str):
                raise RLPromptError(f"{source}: '{split}' must be a file path, got {spec[split]!r}")
            split_files[split] = (base_dir / spec[split]).expanduser()
    plan = _split_plan(spec, base_dir, source)
    if plan is not None and plan.data is not None:
        split_files = {split: plan.data for split in SPLITS} | split_files
    if not split_files:
        raise RLPromptError(
            f"{source}: give at least one data file under 'train', 'dev' or 'test' (or 'data' for one file)"
        )
    templates = {}
    if spec.get("template") is not None:
        templates = {"causal": spec["template"], "masked": spec["template"]}
    if spec.get("templates") is not None:
        if not isinstance(spec["templates"], dict) or set(spec["templates"]) - {"causal", "masked"}:
            raise RLPromptError(f"{source}: 'templates' must map 'causal' and/or 'masked' to a template")
        templates.update(spec["templates"])
    for kind, text in templates.items():
        if not isinstance(text, str):
            raise RLPromptError(f"{source}: template for {kind} models must be a string, got {text!r}")
    for key in ("text_column", "label_column", "name", "manual_prompt"):
        if key in spec and not isinstance(spec[key], str):
            raise RLPromptError(f"{source}: {key!r} must be a string, got {spec[key]!r}")
    return Task(
        name=spec.get("name") or Path(source).stem,
        verbalizers=words,
        class_names=keys,
        split_files=split_files,
        text_columns=(spec.get("text_column", "sentence"),),
        label_column=spec.get("label_column", "label"),
        label_map={k: i for i, k in enumerate(keys)},
        templates=templates,
        manual_prompt=spec.get("manual_prompt", "It was"),
        plan=plan,
    )


def _split_plan(spec: dict, base_dir: Path, source: str) -> SplitPlan | None:
    """The task's own splitting, if it asks for any (``data``, ``split_column``, ``*_size``)."""
    keys = ("data", "split_column", "split_names", "dev_size", "test_size", "split_seed")
    if not any(spec.get(k) is not None for k in keys):
        return None
    data = spec.get("data")
    if data is not None and not isinstance(data, str):
        raise RLPromptError(f"{source}: 'data' must be a file path, got {data!r}")
    column = spec.get("split_column")
    if column is None and data is not None and (base_dir / data / "dataset_dict.json").is_file():
        column = SPLIT_OF_DATASET_DICT  # a saved DatasetDict splits itself
    if column is not None and (not isinstance(column, str) or data is None):
        raise RLPromptError(f"{source}: 'split_column' names a column of the 'data' file")
    names = dict(DEFAULT_SPLIT_NAMES)
    if spec.get("split_names") is not None:
        given = spec["split_names"]
        if not isinstance(given, dict) or set(given) - set(SPLITS):
            raise RLPromptError(
                f"{source}: 'split_names' maps train, dev and test to the values in the split column"
            )
        names.update(
            {k: [label_key(v) for v in (vs if isinstance(vs, list) else [vs])] for k, vs in given.items()}
        )
    sizes = {}
    for key in ("dev_size", "test_size"):
        value = spec.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value <= 0
            or (isinstance(value, float) and value >= 1)
        ):
            raise RLPromptError(
                f"{source}: '{key}' must be a fraction between 0 and 1 or a count, got {value!r}"
            )
        sizes[key] = value
    seed = spec.get("split_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RLPromptError(f"{source}: 'split_seed' must be an integer, got {seed!r}")
    return SplitPlan(
        source=source, data=(base_dir / data).expanduser() if data else None, split_column=column,
        split_names=names, seed=seed, **sizes,
    )  # fmt: skip


def sampled_test(examples: list[Example], limit: int | None) -> list[Example]:
    """``limit`` of the test ``examples`` in their order, drawn with seed 0 (the same sample for every
    method, seed and run); all of them when there are no more."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = np.sort(np.random.default_rng(0).choice(len(examples), size=limit, replace=False))
    return [examples[i] for i in keep]


def load_task(name: str, seed: str = DEFAULT_SEED) -> Task:
    """A built-in task by name, or a user task from a YAML file describing it."""
    if name in _BUILTIN:
        return builtin_task(name, seed)
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return task_from_spec(read_yaml(path), path.parent, str(path))
    kind = task_kind(name)
    if kind.name != DEFAULT_KIND:  # a built-in task of another kind: it has no labels to score
        raise RLPromptError(
            f"{name!r} is a {kind.name} task, not a classification one: its prompts are evaluated by the "
            "training run that learns them"
        )
    others = [
        f"the {spec.name} kind's {', '.join(spec.builtin_tasks)}"
        for spec in TASK_KINDS.values()
        if spec.builtin_tasks
    ]
    raise RLPromptError(
        f"unknown task {name!r}; built-in tasks are {', '.join(BUILTIN_TASKS)} (and, to train, "
        f"{'; '.join(others)}), or give a task YAML file"
    )


# -- file readers ----------------------------------------------------------------------------------


SPLIT_OF_DATASET_DICT = "__split__"  # the split column a saved DatasetDict's rows get (its split names)


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Columns and (line number, row) pairs of a TSV, CSV, JSONL or Parquet file, or of a Hugging Face
    ``datasets`` directory written with ``save_to_disk`` (read offline with pyarrow, never downloaded).

    TSV is split on tabs with no quoting (many sentences begin with a double quote); CSV uses standard
    quoting; JSONL has one JSON object per line. Parquet and Arrow rows are numbered from 1. A saved
    ``DatasetDict`` gives every row its split's name in the column ``__split__``.
    """
    path = Path(path)
    if path.is_dir():
        return _read_saved_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq = _pyarrow(path, "parquet")
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as err:
            raise RLPromptError(f"{path}: not a readable Parquet file ({err})") from None
        return _arrow_rows(path, table)
    if suffix not in (".tsv", ".csv", ".jsonl"):
        raise RLPromptError(
            f"{path}: unsupported data file type {suffix or '(none)'!r}; use .tsv, .csv, .jsonl, .parquet "
            "or a datasets directory (save_to_disk)"
        )
    text = read_text(path)
    if not text.strip():
        raise RLPromptError(f"{path}: file is empty")
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    if suffix == ".tsv":
        records = [(i + 1, line.split("\t")) for i, line in enumerate(_lines(text))]
    else:
        try:  # the reader, not a line split, ends rows: a quoted field may hold line breaks
            reader = csv.reader(io.StringIO(text, newline=""))
            records, start = [], 1
            for row in reader:  # a row is named by the line it starts on
                records.append((start, row))
                start = reader.line_num + 1
        except csv.Error as err:
            raise RLPromptError(f"{path}:{start}: malformed CSV ({err})") from None
    _, header = records[0]
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or not all(header):
        raise RLPromptError(f"{path}: header row has empty or repeated column names: {header}")
    rows = []
    for line, fields in records[1:]:
        if fields == [] or fields == [""]:
            continue  # blank line
        if len(fields) != len(header):
            raise RLPromptError(f"{path}:{line}: {len(fields)} fields, but the header has {len(header)}")
        rows.append((line, dict(zip(header, fields, strict=True))))
    return header, rows


def _lines(text: str) -> list[str]:
    """A file's lines, ended by newlines only: str.splitlines also breaks at form feeds, U+2028 and other
    characters that a sentence (or a JSON string) may hold."""
    return text.removesuffix("\n").split("\n")


def _pyarrow(path: Path, module: str):
    try:
        import importlib

        return importlib.import_module(f"pyarrow.{module}")
    except ImportError:
        raise RLPromptError(
            f"{path}: reading it needs pyarrow: pip install 'rlprompt[data]' (or pyarrow)"
        ) from None


def _arrow_rows(path: Path, table) -> tuple[list[str], list[tuple[int, dict]]]:
    if table.num_rows == 0:
        raise RLPromptError(f"{path}: no rows")
    return list(table.column_names), [(i + 1, row) for i, row in enumerate(table.to_pylist())]


def _read_saved_dataset(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """A ``Dataset`` or ``DatasetDict`` directory from ``datasets``' ``save_to_disk``."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads(read_text(path / "dataset_dict.json")).get("splits", [])
        columns, rows = None, []
        for split in splits:
            cols, part = _read_saved_dataset(path / split)
            columns = columns or cols
            rows += [
                (len(rows) + i + 1, {**row, SPLIT_OF_DATASET_DICT: split}) for i, (_, row) in enumerate(part)
            ]
        if columns is None:
            raise RLPromptError(f"{path}: the dataset dictionary lists no splits")
        return [*columns, SPLIT_OF_DATASET_DICT], rows
    state = path / "state.json"
    if not state.is_file():
        raise RLPromptError(
            f"{path}: a directory, but not a saved dataset (no state.json or dataset_dict.json)"
        )
    ipc = _pyarrow(path, "ipc")
    import pyarrow as pa

    tables = []
    for entry in json.loads(read_text(state)).get("_data_files", []):
        try:
            with pa.memory_map(str(path / entry["filename"])) as source:
                tables.append(ipc.open_stream(source).read_all())
        except (OSError, KeyError, pa.ArrowInvalid) as err:
            raise RLPromptError(f"{path}: cannot read its data files ({err})") from None
    if not tables:
        raise RLPromptError(f"{path}: the saved dataset lists no data files")
    return _arrow_rows(path, pa.concat_tables(tables))


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows, columns = [], {}
    for i, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RLPromptError(f"{path}:{i}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise RLPromptError(f"{path}:{i}: each line must be a JSON object, got {type(row).__name__}")
        columns.update(dict.fromkeys(row))
        rows.append((i, row))
    names = list(columns)
    for _, row in rows:
        missing = [c for c in names if c not in row]
        for c in missing:
            row[c] = None
    return names, rows
