"""Task kinds: what a prompt is for. A kind is one module here plus one line in
:data:`rlprompt.registry.TASK_KINDS`; the module provides

* ``load(config) -> LoadedTask``: the task (every split checked), the task LM, the config as it will run,
  and the shared test scorer (None when the kind scores its own test set);
* ``objective(ctx, policy_lm) -> Objective``: what the RL method (and the search) optimise;
* optionally ``for_seed(config, task, lm, seed, test_scorer) -> (config, test_scorer)``: what one seed's
  runs read when the seed changes the template (classification's ``task.demonstrations``).

``classification`` (label through verbalizers: the benchmarks, task files, data directories) and ``style``
(rewrite into a target style) are the two kinds.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from rlprompt.registry import TaskKindSpec


@dataclass
class LoadedTask:
    task: Any  # rlprompt.tasks.Task, rlprompt.style.StyleTask, ...
    lm: Any  # the frozen task LM
    config: Any  # the TrainConfig as it will run (device and dtype resolved, kind-specific settings)
    test_scorer: Any = None  # shared by the methods that leave the model unchanged; None: the kind scores


class Objective(Protocol):
    """What the RL method asks of a task kind (``rlprompt.methods.rl``): the env that pays rewards, the dev
    score that chooses among candidate prompts, the test report of the chosen one, and cache plumbing."""

    metric: str  # the primary metric's name (the kind's first)
    lm: Any  # the task LM
    policy_lm: Any  # the model whose tokens prompts are written in
    stats: Any  # rlprompt.scoring.ScorerStats: reward queries and LM tokens spent

    def make_env(self, config, seed: int, vocab): ...

    def dev(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the dev score (primary metric) and a tie-breaker."""

    def elite_scores(self, batch: dict) -> np.ndarray: ...

    def task_token_ids(self, policy_ids) -> list[int]: ...

    def export_fields(self) -> dict: ...

    def test(self, ctx, best, manual: str): ...

    def cached_scores(self): ...

    def load_cached_scores(self, state) -> None: ...


def kind_module(spec: TaskKindSpec) -> ModuleType:
    return importlib.import_module(spec.module)


def resolved(config, lm):
    """The config with the device and dtype that ``auto`` resolved to: config.yaml records what ran. For
    a server (whose own precision is its business) they are where the policy's backbone runs here."""
    from rlprompt.backends import backend_of
    from rlprompt.models import resolve_device, resolve_dtype

    if backend_of(lm.name).name != "hf":
        device = resolve_device(config.device)
        return dataclasses.replace(config, device=device, dtype=resolve_dtype(config.dtype, device))
    return dataclasses.replace(config, device=lm.device, dtype=lm.dtype)
