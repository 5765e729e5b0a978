"""What the look-back scripts (``selection_rules.py``, ``ensemble_rules.py``) share: the finished runs
under the paths they are given, each run's top prompts by dev, and one task and Scorer per (task, data
split, model, dtype), loaded once however many runs use it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from rlprompt.kinds import classification


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
