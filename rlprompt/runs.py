"""One run of a grid (a method on a seed) in its own directory: its config, its result or its failure, and
reading back a finished one. The executors (:mod:`rlprompt.executors`) call :func:`run_one`, in this
process or in a worker."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import yaml

from rlprompt.checkpoint import CHECKPOINT, NonFiniteError, load_checkpoint
from rlprompt.errors import RLPromptError, ServiceUnavailable
from rlprompt.files import atomic_write_bytes
from rlprompt.registry import task_kind
from rlprompt.settings import to_dict


def run_one(config, method, seed, task, lm, root: Path, single, test_scorer, cache, progress, stop, resume):
    """One method on one seed, in its own run directory (the root one for a single run). When resuming,
    a finished run is read back, an interrupted one continues from its checkpoint."""
    from stable_baselines3.common.utils import set_random_seed

    from rlprompt.kinds import kind_module
    from rlprompt.methods import MethodContext, run_method

    kind = task_kind(config.task.name, config.task.kind)
    for_seed = getattr(kind_module(kind), "for_seed", None)  # a kind whose template a seed may change
    loaded = config
    if for_seed is not None:
        # A seed's runs in one process share its config and test scorer, so its test-sentence prefixes
        # are computed once; grids run seed by seed, so only the latest seed's is kept.
        held = cache.get("for_seed")
        if held is None or held[0] != seed:
            held = cache["for_seed"] = (seed, *for_seed(config, task, lm, seed, test_scorer))
        _, config, test_scorer = held
    run_dir = root
    if not single:
        run_dir = root / f"{method}__s{seed}"
        run_dir.mkdir(exist_ok=resume)
    state = None
    if resume:
        if single:
            if finished_result(run_dir) is not None:
                raise RLPromptError(f"{run_dir}: this run finished; nothing to resume")
        elif (finished := kept_result(run_dir, method, seed)) is not None:
            return finished
    if not single:
        write_config(dataclasses.replace(config, method=method, methods=[], seed=seed, seeds=[]), run_dir)
    elif config is not loaded:  # the seed's template and exclusions, as a grid run's config.yaml has them
        write_config(config, run_dir)
    if resume:
        state = load_checkpoint(run_dir)
        if state is not None and state.get("method") != method:
            raise RLPromptError(
                f"{run_dir}/{CHECKPOINT}: a checkpoint of {state.get('method')!r}, not {method!r}"
            )
        print(f"{method} seed {seed}: {_resuming(state)}", flush=True)
    (run_dir / FAILURE).unlink(missing_ok=True)  # an earlier attempt's failure: this one starts afresh
    set_random_seed(seed)
    context = MethodContext(
        config,
        seed,
        task,
        lm,
        run_dir,
        test_scorer,
        progress,
        cache,
        stop,
        state,
        kind,
    )
    result = run_method(method, context)
    print(
        f"{method} seed {seed}: dev {result.dev_score:.3f} test {result.test_score:.3f} "
        f"({result.learned}) in {result.train_seconds:.0f} s",
        flush=True,
    )
    return result


FAILURE = "failure.json"  # in a grid run's directory: why it failed (removed when it finishes)


def record_failure(run_dir: Path, method: str, seed: int, err: Exception) -> dict:
    """Write ``failure.json`` (the error in one line, and the traceback) into the run's directory."""
    import traceback

    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    failure = {"method": method, "seed": seed, "error": f"{type(err).__name__}: {message}".rstrip(": "),
               # the run refused a setting or an input (not a crash, a lost server or a NaN stop, whose own
               # messages say how to resume): the console says which settings a resume can change
               "refused": isinstance(err, RLPromptError)
               and not isinstance(err, (ServiceUnavailable, NonFiniteError)),
               "traceback": "".join(traceback.format_exception(err))}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / FAILURE, (json.dumps(failure, indent=2) + "\n").encode("utf-8"))
    return failure


def _resuming(state: dict | None) -> str:
    """What a resumed run does next, from its checkpoint (None: it has none)."""
    if state is None:
        return "starting (no checkpoint to continue from)"
    if state.get("finished"):
        return f"training was over (step {state['step']}): resuming at its test evaluation"
    return f"resuming at step {state['step']}"


def kept_result(run_dir: Path, method: str, seed: int):
    """When resuming a grid: the result of a run that finished, kept as it was trained (its config.yaml is
    not rewritten with the resume's settings, and a failure.json from another attempt no longer applies);
    None for a run to (re)start."""
    finished = finished_result(run_dir)
    if finished is not None:
        (run_dir / FAILURE).unlink(missing_ok=True)
        print(f"{method} seed {seed}: finished before, kept", flush=True)
    return finished


def finished_result(run_dir: Path):
    """The result of a run that finished (None for one interrupted, or whose result.json is missing or
    unreadable: said, as the run then continues from its checkpoint or trains again)."""
    from rlprompt.methods import MethodResult

    path = run_dir / "result.json"
    if not path.exists():
        return None
    try:
        result = MethodResult.load(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        print(f"warning: {path}: unreadable ({type(err).__name__}), so the run is not taken as finished",
              file=sys.stderr, flush=True)  # fmt: skip
        return None
    return None if result.interrupted else result


def write_config(config, run_dir: Path) -> None:
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_bytes(run_dir / "config.yaml", text.encode("utf-8"))  # --resume reads it back
