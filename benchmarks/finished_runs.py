"""What the look-back scripts (``selection_rules.py``, ``ensemble_rules.py``, ``prompt_pool.py``) share: the
finished runs under the paths they are given, each run's top prompts by dev, one task and Scorer per (task,
data split, model, dtype), loaded once however many runs use it, and the figures and forward selection they
rank prompts and ensembles by."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from rlprompt.envs.prompt_env import batch_accuracy, loglik_reward

from rlprompt.evaluation import ensemble_scores
from rlprompt.kinds import classification


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of one prompt's (examples, classes) label scores (the env's, for one prompt)."""
    return float(batch_accuracy(scores[None], labels)[0])


def loglik(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean log-probability of the right label, renormalised over the classes (the env's log-likelihood
    reward, for one prompt)."""
    return float(loglik_reward(scores[None], labels)[0])


def ensemble_accuracy(scores: list[np.ndarray], labels: np.ndarray, taken: list[int]) -> float:
    """Accuracy of the ensemble of the prompts ``taken`` (indices into ``scores``)."""
    return accuracy(ensemble_scores([scores[i] for i in taken]), labels)


def agreement(scores: list[np.ndarray]) -> np.ndarray:
    """Each prompt's agreement with the consensus of all of them (the argmax of their ensemble): the share
    of the inputs on which its label is the consensus label. Reads no label."""
    consensus = ensemble_scores(scores).argmax(-1)
    return np.array([float((s.argmax(-1) == consensus).mean()) for s in scores])


def forward(
    scores: list[np.ndarray], labels: np.ndarray, picks: int, objective=loglik, start: tuple[int, ...] = ()
) -> list[int]:
    """Greedy forward selection (with repeats) of an ensemble of ``picks`` members from ``start``: each
    pick the prompt whose addition maximises ``objective`` of the ensemble's scores."""
    chosen = list(start)
    while len(chosen) < picks:

        def gain(c: int):
            return objective(ensemble_scores([scores[i] for i in chosen + [c]]), labels)

        chosen.append(max(range(len(scores)), key=gain))
    return chosen


def save_scores(path, texts: list[str], scores: dict, labels: dict) -> None:
    """Prompts' label scores on each split (``scores[split]``: one (examples, classes) array a prompt) and
    the splits' labels, for :func:`load_scores`."""
    arrays = {f"{split}_scores": np.stack(scores[split]) for split in scores}
    arrays |= {f"{split}_labels": labels[split] for split in labels}
    np.savez_compressed(path, texts=np.array(texts), **arrays)


def load_scores(path) -> tuple[list[str], dict, dict]:
    """What :func:`save_scores` wrote: the texts, and the scores and labels by split."""
    saved = np.load(path)
    splits = [key.removesuffix("_labels") for key in saved.files if key.endswith("_labels")]
    return (
        [str(t) for t in saved["texts"]],
        {s: list(saved[f"{s}_scores"]) for s in splits},
        {s: saved[f"{s}_labels"] for s in splits},
    )


def finished_runs(paths: list[str]) -> list[Path]:
    """Each path that is a finished run, and the finished ``*__s*`` runs of each comparison directory."""
    runs: list[Path] = []
    for path in map(Path, paths):
        runs += [path] if (path / "prompt.json").exists() else sorted(path.glob("*__s*"))
    return [run for run in runs if (run / "prompt.json").exists()]


def top_prompts(run: Path) -> list[dict]:
    """The run's ``top_k_report`` best prompts by dev, best first (``prompt.json``'s top_k_prompts)."""
    return json.loads((run / "prompt.json").read_text())["metrics"].get("top_k_prompts", [])


class Scorers:
    """The task and Scorer a run was scored with, loaded once per (task, split, model, dtype)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, tuple] = {}

    def get(self, config, dtype: str | None = None):
        """``(task, scorer)`` for a run's config (a TrainConfig), in ``dtype`` (default: the run's own),
        loaded as the run loaded them: its label words, test subsample and template."""
        config = copy.deepcopy(config)
        config.dtype, config.device = dtype or config.dtype, "cpu"
        task = config.task
        key = (task.name, task.seed, task.template, tuple(task.verbalizers or ()), task.test_examples,
               config.model, config.dtype, config.env.prompt_length)  # fmt: skip
        if key not in self._loaded:
            loaded = classification.load(config)
            self._loaded[key] = (loaded.task, loaded.test_scorer)
        return self._loaded[key]
