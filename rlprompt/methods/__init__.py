"""Training methods behind one interface: ``run(context) -> MethodResult``.

Every method trains (or not) on the same training split, evaluates on dev through the Scorer at
``config.evaluations`` evenly spaced points of its budget, keeps its best prompt or checkpoint on dev
(the gradient methods by ``config.checkpoint_rule``), reports its test accuracy and writes its artifact
into its run directory. The driver (:mod:`rlprompt.driver`) runs methods over seeds and builds the
comparison report (:mod:`rlprompt.comparison`).
Which methods exist, what they learn and what they need is :data:`rlprompt.registry.METHODS`
(``python -m rlprompt.train --list-methods``).
"""

from __future__ import annotations

import importlib

from rlprompt.checkpoint import remove_checkpoint
from rlprompt.methods.base import (  # noqa: F401 - the package's public names
    REFERENCES,
    EvalLog,
    MethodContext,
    MethodResult,
    TestResult,
    dev_accuracy,
    path_bytes,
)
from rlprompt.registry import METHODS
from rlprompt.tasks import BUILTIN_TASKS

INTERPRETABLE = {name: spec.interpretable for name, spec in METHODS.items()}
TRANSFERABLE = {name: spec.transferable for name, spec in METHODS.items()}
NEEDS = {name: spec.needs for name, spec in METHODS.items()}  # rlprompt.backends.Capability names


def run_method(name: str, context: MethodContext) -> MethodResult:
    """Run method ``name`` in ``context``; the result is also saved as ``result.json``."""
    module, function = METHODS[name].runner.split(":")
    run = getattr(importlib.import_module(module), function)
    result = run(context)
    if result.data_seed is None and context.config.task.name in BUILTIN_TASKS:
        result.data_seed = context.config.task.seed  # a built-in task's few-shot split
    result.save(context.run_dir)
    if not result.interrupted:
        remove_checkpoint(context.run_dir)  # finished: result.json marks it; the checkpoint is dead weight
    return result
