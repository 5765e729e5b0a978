"""The driver behind ``python -m rlprompt.train`` and :func:`rlprompt.api.learn`: every configured method on
every seed, in one run directory or a comparison directory (with the report), resumable, checked before
anything runs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from rlprompt.checkpoint import StopRequest
from rlprompt.config import TrainConfig
from rlprompt.errors import RLPromptError, ServiceUnavailable
from rlprompt.executors import ray_address, run_local, run_on_ray
from rlprompt.files import DirectoryLock, atomic_write_bytes
from rlprompt.kinds import kind_module
from rlprompt.models import LanguageModel
from rlprompt.registry import METHODS, task_kind
from rlprompt.runs import run_one, write_config
from rlprompt.tasks import BUILTIN_TASKS, FEW_SHOT_SEEDS, Task

# What a grid stopped by Ctrl-C or SIGTERM says before its report
STOPPED_GRID = "\ninterrupted: the report covers the runs that finished and marks any stopped midway"


def train(
    config: TrainConfig, progress: bool = True, run_dir: Path | None = None, resume: bool = False,
    overwrite: bool = False, dry_run: bool = False, splits: int = 1, show_plan: bool = True,
) -> dict:  # fmt: skip
    """Run every configured method on every seed. Returns the run directory, the results and a summary
    (one run: also ``prompt`` and ``metrics`` of the RL prompt, for scripts that want them).

    ``run_dir``: where to write (default: a new directory under ``output_dir``); with ``resume``, runs that
    finished there are kept, an interrupted one continues from its checkpoint and the rest start;
    ``overwrite`` empties ``run_dir`` first (once the config has passed every check). ``dry_run``: check
    everything a run would check, return (and print) the plan, write nothing. ``splits``: how many data
    splits the grid runs on (``task.seeds``; the plan counts them all); ``show_plan``: print the plan (when
    showing progress)."""
    if len(config.task.seed_list) > 1:
        return _train_splits(config, progress, run_dir, resume, overwrite, dry_run)
    import torch

    requested = config
    threads_before = torch.get_num_threads()  # restored after the runs (a library call leaves it as it was)
    with _restored_threads(threads_before):
        # Runs in this process use threads_per_run, and so does the plan's speed probe: probed with every
        # core while another process starts beside it, the plan came out several times too long.
        if config.threads_per_run is not None and (_single(config, splits) or config.executor == "local"):
            cpus = os.cpu_count() or 1
            if config.threads_per_run > cpus:  # on Ray a task's CPUs are the cluster's to grant; here, ours
                raise RLPromptError(
                    f"'threads_per_run' is {config.threads_per_run}, more than this machine's {cpus} CPUs "
                    "(runs in this process use that many threads)"
                )
            torch.set_num_threads(config.threads_per_run)
        _check_ray(config, splits)
        grid = _prepare(config, progress and show_plan, run_dir, resume, overwrite, dry_run, splits)
        if isinstance(grid, dict):  # a dry run's answer
            return grid
        try:
            results, failures = _run_grid(grid, requested, resume, progress)
            return _finish(grid, results, failures, progress)
        except KeyboardInterrupt as stopped:  # a second signal: rlprompt.train's last line says how to go on
            stopped.run_dir = getattr(stopped, "run_dir", None) or grid.root
            raise
        except ServiceUnavailable as lost:  # the server stopped answering: the run resumes once it is back
            lost.run_dir = grid.root
            raise
        finally:
            grid.lock.release()


def _run_grid(grid: _Grid, requested: TrainConfig, resume: bool, progress: bool) -> tuple[list, list[dict]]:
    """Every run of a prepared grid: their results and failures."""
    config, single, task, lm, root = grid.config, grid.single, grid.task, grid.lm, grid.root
    results: list = []
    failures: list[dict] = []
    with StopRequest() as stop:
        try:
            if single:
                results = [run_one(config, grid.methods[0], grid.seeds[0], task, lm, root, True,
                                   grid.test_scorer, {}, progress, stop, resume)]  # fmt: skip
            elif config.executor == "ray":
                ((results, failures),) = run_on_ray([(_as_requested(config, requested), root, grid.jobs)],
                                                     resume, stop)  # fmt: skip
            else:
                results, failures = run_local(
                    config, grid.jobs, task, lm, root, grid.test_scorer, progress, stop, resume
                )
        except KeyboardInterrupt as stopped:  # a stopped grid still reports the runs that finished
            results, failures = getattr(stopped, "results", []), getattr(stopped, "failures", [])
            if single or not results:
                raise
            print(STOPPED_GRID, flush=True)
    return results, failures


def _as_requested(config: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """A grid's config for Ray workers: device and dtype as the user set them, so that ``auto`` resolves on
    each worker's machine (the GPU Ray gave it, its CPU's bf16), not on the driver's; each run's own
    config.yaml records what its worker resolved."""
    return dataclasses.replace(config, device=requested.device, dtype=requested.dtype)


@dataclasses.dataclass
class _Grid:
    """A grid ready to run: its config as it will run, the loaded task and LM, and its directory."""

    config: TrainConfig
    task: Task
    lm: LanguageModel
    test_scorer: object
    root: Path
    methods: list[str]
    seeds: list[int]
    single: bool  # one method on one seed: the run directory is the root itself
    lock: DirectoryLock  # held while the grid runs and reports

    @property
    def jobs(self) -> list[tuple[str, int]]:
        return [(method, seed) for seed in self.seeds for method in self.methods]


def _check_ray(config: TrainConfig, splits: int) -> None:
    """What a grid on Ray needs, checked before anything loads or is written (a dry run too): Ray itself; a
    cluster's address that answers (Ray waits minutes on a wrong one); on an instance started here, runs
    that ask for no more CPUs or GPUs than this machine has (they would wait for ever; a cluster's are
    checked once connected)."""
    if config.executor != "ray" or _single(config, splits):
        return
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RLPromptError("executor: ray needs Ray: pip install 'rlprompt[ray]'")
    address = ray_address(config)
    if address is not None:
        if address not in ("auto", "local") and "://" not in address:  # host:port of a cluster's head
            import socket

            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
            except (OSError, ValueError) as err:
                why = getattr(err, "strerror", None) or err
                raise RLPromptError(
                    f"ray.address {address!r}: nothing answers there ({why}); "
                    "start the cluster's head (ray start --head) or fix the address"
                ) from None
        return
    import torch

    cpus = config.ray.num_cpus or os.cpu_count() or 1
    if (config.threads_per_run or 1) > cpus:
        raise RLPromptError(
            f"'threads_per_run' is {config.threads_per_run}, more than the {cpus} CPUs of the Ray instance "
            "started here (ray.num_cpus, else this machine's): no run could start"
        )
    gpus = torch.cuda.device_count()
    if config.ray.gpus_per_run > gpus:
        raise RLPromptError(
            f"'ray.gpus_per_run' is {config.ray.gpus_per_run:g}, more than this machine's {gpus} GPUs "
            "(a Ray instance is started here: set ray.address to use a cluster's)"
        )


def _single(config: TrainConfig, splits: int) -> bool:
    """One method on one seed and one data split: it runs in this process, in the root directory."""
    return len(config.method_list) == 1 and len(config.seed_list) == 1 and splits == 1


def _prepare(config: TrainConfig, progress: bool, run_dir: Path | None, resume: bool, overwrite: bool,
             dry_run: bool, splits: int = 1) -> _Grid | dict:  # fmt: skip
    """Every check, the plan, the run directory and its config: a :class:`_Grid` (a dry run: its answer).
    A grid over several data splits (``splits`` > 1) never makes a single-run directory."""
    methods, seeds = config.method_list, config.seed_list
    single = _single(config, splits)
    _check_methods(config, methods)
    kind = task_kind(config.task.name, config.task.kind)
    loaded = kind_module(kind).load(config)  # the kind's own checks first: they name the setting to fix
    other = [m for m in methods if kind.methods is not None and m not in kind.methods]
    if other:
        raise RLPromptError(
            f"method {other[0]!r} does not apply to the {kind.name} task {config.task.name!r}"
            + (f": {kind.methods_note}" if kind.methods_note else "")
            + f"; its methods: {', '.join(kind.methods)}"
        )
    task, lm, config, test_scorer = loaded.task, loaded.lm, loaded.config, loaded.test_scorer
    from rlprompt.methods.tuning import check_adapter_modules

    check_adapter_modules(config, lm, methods)
    if any(METHODS[m].writes_tokens for m in methods):  # a bad policy.backbone fails now, not after hours
        from rlprompt.models import check_model
        from rlprompt.vocab import policy_backbone, policy_model

        if config.executor == "ray":  # the workers load it; the driver only checks that it resolves
            check_model(policy_backbone(config))
        else:
            policy_model(config)  # loaded once per process: the methods reuse it
    plan = None
    if test_scorer is not None and (progress or dry_run) and not resume:
        from rlprompt.plan import format_plan, needs_whole_speed, plan_run, probe_speed

        probe_scorer = test_scorer
        if config.task.demonstrations:  # priced with the longer inputs the runs will read
            _, probe_scorer = kind_module(kind).for_seed(config, task, lm, seeds[0], test_scorer)
        speed = probe_speed(probe_scorer, task.examples("train"), len(lm.tokenizer), config.env.prompt_length,
                            whole=needs_whole_speed(config))  # fmt: skip
        where = f"{lm.name} on a server" if lm.device == "server" else f"{lm.name} on {lm.device}, {lm.dtype}"
        plan = format_plan(plan_run(config, task, speed), speed, config, splits, where)
        print(plan, flush=True)
    if dry_run:
        return {"run_dir": None, "results": [], "interrupted": False, "plan": plan,
                "summary": "dry run: every check passed; nothing was written"}  # fmt: skip
    if run_dir is None:
        root = _new_run_dir(
            config, task, lm, methods[0] if single else "compare", seeds[0] if single else None
        )
    else:
        root = Path(run_dir)
        if overwrite:
            _remove_previous_run(root)
        root.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(root)
    if not resume and (root / "config.yaml").exists():  # another process made it since the first check
        lock.release()
        raise RLPromptError(
            f"{root}: run directory already exists (made by another process since this one started); "
            f"--resume {root} continues it"
        )
    write_config(config, root)  # when resuming: with any new learning rate
    record = getattr(task, "split_record", None)
    if record is not None:  # splits the task made itself (a split column, or carved): kept with the run
        atomic_write_bytes(root / "split.json", (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return _Grid(config, task, lm, test_scorer, root, methods, seeds, single, lock)


def _finish(grid: _Grid, results: list, failures: list[dict], progress: bool) -> dict:
    """The reference rows and the report (or a single run's summary) of a grid that ran."""
    root, single = grid.root, grid.single
    ended = len(results) + len(failures)  # runs that finished or failed; the rest were never reached
    unfinished = ended < len(grid.jobs) or any(r.interrupted for r in results)
    if not single and grid.test_scorer is not None and results:
        _write_references(grid.config, grid.task, grid.test_scorer, root, progress)
    out = {"run_dir": root, "results": results, "interrupted": unfinished, "failed": failures}
    if single:
        summary_file = root / "summary.txt"
        r = results[0]
        out["summary"] = (
            summary_file.read_text(encoding="utf-8").strip()
            if summary_file.exists()
            else f"run: {root}\n{r.method}: dev {r.metric} {r.dev_score:.3f}   "
            f"test {r.metric} {r.test_score:.3f}"
        )
        if METHODS[r.method].writes_prompt:  # what the run reports about its prompt (summary, --json)
            from rlprompt.export import load_prompt

            exported = load_prompt(root / "prompt.json")
            out["prompt"], out["metrics"] = exported, exported.metrics
    elif results:
        from rlprompt.comparison import write_report

        report = write_report([root], root)
        out["summary"] = f"run: {root}\n\n{report}"
    else:  # every run failed, or none started (a grid over splits stopped before this one)
        out["summary"] = f"run: {root}\n\nno run finished"
    return out


def _train_splits(config: TrainConfig, progress: bool, run_dir: Path | None, resume: bool, overwrite: bool,
                  dry_run: bool) -> dict:  # fmt: skip
    """The grid on each data split (``task.seeds``) in its own subdirectory ``split-<seed>``, then one report
    over all of them (mean ± std over splits and seeds). Locally the splits run one after another; on Ray
    every run of every split is submitted at once."""
    splits = config.task.seed_list
    if config.task.name not in BUILTIN_TASKS:
        raise RLPromptError(
            f"task.seeds: data splits are the built-in tasks' few-shot seeds ({', '.join(FEW_SHOT_SEEDS)}); "
            f"task {config.task.name!r} has one set of splits"
        )
    _check_ray(config, len(splits))
    configs = [dataclasses.replace(config, task=dataclasses.replace(config.task, seed=s, seeds=[]))
               for s in splits]  # fmt: skip
    if dry_run:
        train(configs[0], progress, dry_run=True, splits=len(splits))  # every split costs the same
        for split_config in configs[1:]:  # ... and every split's data is checked
            kind_module(task_kind(config.task.name, config.task.kind)).load(split_config)
        summary = f"dry run: every check passed on {len(splits)} data splits; nothing was written"
        return {"run_dir": None, "results": [], "interrupted": False, "summary": summary}
    if run_dir is None:
        root = _new_dir(
            config.output_dir, f"{_clean(config.task.name)}__compare-splits__{_clean(config.model)}"
        )
    else:
        root = Path(run_dir)
        if overwrite and root.exists():
            _remove_previous_run(root)
    root.mkdir(parents=True, exist_ok=True)
    write_config(config, root)  # --resume ROOT comes back here, with every split
    subs = [root / f"split-{s}" for s in splits]
    outs = []
    if config.executor == "ray":
        grids: list[_Grid] = []
        try:
            for i, (c, sub) in enumerate(zip(configs, subs, strict=True)):
                grids.append(_prepare(c, progress and i == 0, sub, resume and sub.exists(), False, False,
                                      len(splits)))  # fmt: skip
            with StopRequest() as stop:
                try:
                    jobs = [(_as_requested(g.config, c), g.root, g.jobs)
                            for g, c in zip(grids, configs, strict=True)]  # fmt: skip
                    per_grid = run_on_ray(jobs, resume, stop)
                except KeyboardInterrupt as stopped:
                    per_grid = getattr(stopped, "by_grid", None)
                    if not per_grid or not any(results for results, _ in per_grid):
                        stopped.run_dir = root  # --resume ROOT continues every split
                        raise
                    print(STOPPED_GRID, flush=True)
            outs = [_finish(g, results, failures, progress)
                    for g, (results, failures) in zip(grids, per_grid, strict=True)]  # fmt: skip
        finally:
            for g in grids:
                g.lock.release()
    else:
        for i, (split, split_config, sub) in enumerate(zip(splits, configs, subs, strict=True)):
            if progress:
                print(f"data split {split} ({i + 1} of {len(splits)})", flush=True)
            try:
                outs.append(train(split_config, progress, sub, resume and sub.exists(), False, False,
                                  len(splits), show_plan=i == 0))  # fmt: skip
            except KeyboardInterrupt as stopped:
                if not outs:
                    stopped.run_dir = root  # --resume ROOT continues every split
                    raise
                print(STOPPED_GRID, flush=True)
                break
            if outs[-1]["interrupted"]:
                break
    from rlprompt.comparison import write_report

    finished = any(out["results"] for out in outs)
    report = write_report([root], root) if finished else "no run finished"
    return {
        "run_dir": root,
        "results": [r for out in outs for r in out["results"]],
        "interrupted": len(outs) < len(splits) or any(out["interrupted"] for out in outs),
        "failed": [f for out in outs for f in out.get("failed", [])],
        "summary": f"run: {root}\n\n{report}",
    }


def _write_references(config: TrainConfig, task: Task, test_scorer, root: Path, progress: bool) -> None:
    """The manual and empty prompts on test, raw and calibrated, for the comparison report (their scores
    are in the shared test scorer's cache when a prompt method has run)."""
    from rlprompt.calibration import reference_method
    from rlprompt.evaluation import reference_results
    from rlprompt.methods import REFERENCES

    manual = config.manual_prompt_for(task)
    references = reference_results(test_scorer, task, manual, reference_method(config.calibration), progress)
    atomic_write_bytes(root / REFERENCES, (json.dumps(references, indent=2) + "\n").encode("utf-8"))


@contextlib.contextmanager
def _restored_threads(count: int):
    import torch

    try:
        yield
    finally:
        torch.set_num_threads(count)


def _check_methods(config: TrainConfig, methods: list[str]) -> None:
    """Every method can run on the task LM's backend: one clear error before anything is loaded."""
    from rlprompt.backends import Capability, require

    kind = task_kind(config.task.name, config.task.kind)
    for method in methods:
        needed = Capability(0)
        for name in kind.needs if kind.needs is not None else METHODS[method].needs:
            needed |= Capability[name]
        require(config.model, needed, f"method {method!r}" + (f" ({kind.name})" if kind.needs else ""))


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name or name).strip("-") or "x"


def _new_run_dir(config: TrainConfig, task: Task, lm: LanguageModel, method: str, seed: int | None) -> Path:
    seed_part = f"__s{seed}" if seed is not None else ""
    return _new_dir(config.output_dir, f"{_clean(task.name)}__{method}__{_clean(lm.name)}{seed_part}")


def require_previous_run(root: Path) -> None:
    """Refuse to replace ``root`` unless it holds a run (its ``config.yaml``): overwriting deletes it."""
    if not (Path(root) / "config.yaml").is_file():
        raise RLPromptError(f"{root}: not a run directory (no config.yaml); --overwrite only replaces runs")


def _remove_previous_run(root: Path) -> None:
    require_previous_run(root)  # (rlprompt.train checks it before any model loads; a library caller here)
    shutil.rmtree(root)


def _new_dir(output_dir: str, name: str) -> Path:
    """A new directory ``output_dir/name__<time>`` (with a suffix if that exists)."""
    name = f"{name}__{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(output_dir) / name
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(output_dir) / f"{name}-{suffix}"
    try:
        run_dir.mkdir(parents=True)
    except OSError as err:  # output_dir is a file, or not writable
        raise RLPromptError(
            f"output_dir {output_dir}: cannot create {run_dir.name} in it ({err.strerror})"
        ) from None
    return run_dir
