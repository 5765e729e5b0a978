"""The style-transfer tasks' data: the Yelp sentiment pool and test pairs, the Shakespeare 100-shot
splits, and :class:`StyleTask` (inputs, references and the style classifier's pools)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from rlprompt.errors import RLPromptError
from rlprompt.files import read_text
from rlprompt.style.encoder import SentenceEncoder, StyleClassifier, train_style_classifier


def yelp_root() -> Path:
    return Path(str(files("rlprompt") / "data" / "style-transfer" / "yelp"))


def yelp_sentences(split: str, style: int) -> list[str]:
    """Yelp sentences: ``split`` is ``dev`` (the training pool), ``test`` or ``ref`` (human rewrites of
    the test sentences into the other style); ``style`` 0 = negative, 1 = positive."""
    path = yelp_root() / f"sentiment.{split}.{style}.clean"
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


# Built-in style-transfer tasks: their two styles (style 0, style 1) and the default target.
STYLE_TASKS = {
    "yelp-sentiment": (("negative", "positive"), "positive"),
    "shakespeare": (("shakespearean", "modern"), "modern"),
}
SHAKESPEARE_SEEDS = ("100-100", "100-13", "100-21", "100-42", "100-87")


def is_style_task(name: str) -> bool:
    return name in STYLE_TASKS


@dataclass
class StyleTask:
    """Rewrite sentences of the source style into the target style, with no parallel training data.

    ``train``: source-style inputs the reward is computed on; ``dev``: a fixed set of other source-style
    inputs that choose the prompt; ``test`` with its human ``references`` (one per input) for evaluation.
    The style classifier is trained on ``classifier_pools`` (sentences of style 0 and 1)."""

    name: str
    style_names: tuple[str, str]
    target: int
    train: list[str]
    dev: list[str]
    test: list[str]
    references: list[str]
    classifier_pools: tuple[list[str], list[str]]
    classifier_heldout: tuple[list[str], list[str]] | None = None  # None: drawn from the pools
    data_seed: str | None = None

    @property
    def source(self) -> int:
        return 1 - self.target

    @property
    def direction(self) -> str:
        return f"{self.style_names[self.source]} → {self.style_names[self.target]}"

    @property
    def manual_prompt(self) -> str:
        if self.name == "shakespeare":
            return "Rewrite the sentence in modern English:" if self.target == 1 else (
                "Rewrite the sentence in Shakespearean English:")  # fmt: skip
        return f"Rewrite the sentence to be {self.style_names[self.target]}:"

    def classifier(self, encoder: SentenceEncoder) -> StyleClassifier:
        """The task's style classifier, trained on first use and cached."""
        pools = self.classifier_pools
        return train_style_classifier(encoder, pools[0], pools[1], cache_name=self.name.replace("/", "-"),
                                      heldout_sets=self.classifier_heldout)  # fmt: skip


def load_style_task(
    name: str, seed: str | None = None, target: str | None = None, dev_inputs: int = 32
) -> StyleTask:
    """A built-in style-transfer task. ``target`` names the target style (default: the task's);
    ``seed`` picks the Shakespeare 100-shot split (``100-13`` ... ``100-100``; a ``16-X`` few-shot seed
    maps to ``100-X``)."""
    names, default_target = STYLE_TASKS[name]
    target = default_target if target is None else target.strip().lower()
    if target not in names:
        raise RLPromptError(f"style.target: {name} has styles {' and '.join(names)}, got {target!r}")
    t = names.index(target)
    s = 1 - t
    if name == "yelp-sentiment":
        # The distributed pool contains every test sentence (and a few references): none of them may train
        # the classifier or the prompt, or choose the prompt on dev.
        evaluation = {x for part in ("test", "ref") for style in (0, 1) for x in yelp_sentences(part, style)}
        pools = tuple([x for x in yelp_sentences("dev", style) if x not in evaluation] for style in (0, 1))
        # The dev inputs are fixed (not the run's seed): every run chooses its prompt on the same sentences.
        order = np.random.default_rng(12345).permutation(len(pools[s]))
        dev = [pools[s][i] for i in order[:dev_inputs]]
        held = set(dev)  # the pool repeats some sentences: none of the dev ones may be trained on
        train = [pools[s][i] for i in order[dev_inputs:] if pools[s][i] not in held]
        return StyleTask(
            name, names, t, train, dev, yelp_sentences("test", s), yelp_sentences("ref", s), pools
        )
    split = _shakespeare_split(seed)
    tables = {part: _style_table(yelp_root().parent / "shakespeare" / "100-shot" / split / f"{part}.tsv")
              for part in ("train", "dev", "test")}  # fmt: skip
    test0, test1 = tables["test"]
    if len(test0) != len(test1):
        raise RLPromptError(f"shakespeare {split}/test.tsv: the two styles must be line-aligned")
    evaluation = set(test0) | set(test1)  # a few short lines ("Yes.") recur: keep them out of training
    for part in ("train", "dev"):
        tables[part] = tuple([x for x in sentences if x not in evaluation] for sentences in tables[part])
    return StyleTask(
        name, names, t, tables["train"][s], tables["dev"][s][:dev_inputs], tables["test"][s],
        tables["test"][t], tables["train"], tables["dev"], split,
    )  # fmt: skip


def _shakespeare_split(seed: str | None) -> str:
    if seed is None:
        return "100-100"
    seed = str(seed)
    split = seed if seed.startswith("100-") else f"100-{seed.split('-')[-1]}"
    if split not in SHAKESPEARE_SEEDS:
        raise RLPromptError(f"task.seed {seed!r}: shakespeare's splits are {', '.join(SHAKESPEARE_SEEDS)}")
    return split


def _style_table(path: Path) -> tuple[list[str], list[str]]:
    """Sentences of style 0 and style 1 from a ``text<TAB>label`` file (CSV-style quoting, as shipped)."""
    import csv

    rows = list(csv.reader(read_text(path).splitlines(), delimiter="\t"))
    by_style: tuple[list[str], list[str]] = ([], [])
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1].strip() not in ("0", "1"):
            raise RLPromptError(f"{path}:{line}: expected text<TAB>label with label 0 or 1")
        by_style[int(row[1])].append(row[0].strip())
    return by_style


def yelp_style_classifier(encoder: SentenceEncoder) -> StyleClassifier:
    """The Yelp sentiment classifier the runs score style with: trained once on the training pool without
    the test sentences and references, and cached."""
    return load_style_task("yelp-sentiment").classifier(encoder)
