"""Where a grid's runs (methods x seeds, and data splits on Ray) execute.

* ``local`` (:func:`run_local`): one after another in this process, sharing the loaded task LM, its test
  scorer and the forgetting check's "before" perplexity.
* ``ray`` (:func:`run_on_ray`): each run a Ray task asking for ``threads_per_run`` CPUs (and
  ``ray.gpus_per_run`` GPUs), on the cluster at ``ray.address`` or ``$RAY_ADDRESS``, or on a Ray instance
  started here for the grid. A worker loads the task and its LM once and keeps them for the runs it gets;
  it writes each run's directory itself, so the run directory must be on storage the workers share with
  this machine (``output_dir`` or ``--run-dir``). Progress shows here as runs arrive.

Either way a run that fails leaves ``failure.json`` and the grid goes on; the same ``threads_per_run``
gives the same prompts and accuracies on both (tested).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlprompt.checkpoint import StopRequest
from rlprompt.errors import RLPromptError, ServiceUnavailable
from rlprompt.runs import kept_result, record_failure, run_one
from rlprompt.settings import to_dict


def run_local(
    config, jobs, task, lm, root: Path, test_scorer, progress: bool, stop: StopRequest, resume: bool
):
    """Run ``jobs`` ((method, seed) pairs) in order here; returns the results and the failures. A stop
    request ends the grid after the run it interrupted (raised as KeyboardInterrupt, as before)."""
    results, failures, cache = [], [], {}
    for method, seed in jobs:
        try:
            result = run_one(config, method, seed, task, lm, root, False, test_scorer, cache, progress, stop,
                             resume)  # fmt: skip
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # one failed run of a grid: recorded, and the grid goes on
            failures.append(record_failure(root / f"{method}__s{seed}", method, seed, err))
            print(f"{method} seed {seed}: FAILED: {failures[-1]['error']}", flush=True)
            if isinstance(err, ServiceUnavailable):  # the next runs would wait for the server as long
                print("the server stopped answering: the grid stops here", flush=True)
                raise _Stopped(results, failures) from None
            continue
        results.append(result)
        if result.interrupted or stop.requested:  # stop the grid too
            raise _Stopped(results, failures)
    return results, failures


STOP_FILE = ".stop"  # in a grid's directory while a Ray grid stops: its workers' stop request


class StopFile:
    """A Ray worker's stop request: the driver's first Ctrl-C or SIGTERM, passed on as a file in the grid's
    directory (workers are other processes, maybe on other machines, sharing that directory), so a
    running run stops at its next clean point with a checkpoint, as a local one does."""

    def __init__(self, root: Path):
        self.path = Path(root) / STOP_FILE

    @property
    def requested(self) -> bool:
        return self.path.exists()


class _Stopped(KeyboardInterrupt):
    """A stopped grid, with what finished before."""

    def __init__(self, results, failures, by_grid=None):
        super().__init__()
        self.results, self.failures, self.by_grid = results, failures, by_grid


def ray_address(config) -> str | None:
    """The Ray cluster a grid runs on: ``ray.address``, else ``$RAY_ADDRESS``; None: an instance started
    on this machine for the grid."""
    return config.ray.address or os.environ.get("RAY_ADDRESS") or None


def run_on_ray(grids, resume: bool, stop: StopRequest) -> list[tuple[list, list[dict]]]:
    """Run every job of ``grids`` ((config, root, jobs) each: a data split's grid, its directory and its
    (method, seed) pairs) as Ray tasks at once; returns each grid's results (in jobs order) and failures.
    The Ray settings are the first config's (the grids differ only in their data split)."""
    try:
        import ray
    except ImportError:
        raise RLPromptError("executor: ray needs Ray: pip install 'rlprompt[ray]'") from None
    config = grids[0][0]
    started_here = not ray.is_initialized()
    if started_here:
        address = ray_address(config)
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
        if address is None:  # "local": a new instance here, even where a cluster runs (it would attach)
            options["num_cpus"] = config.ray.num_cpus
        try:
            ray.init(address=address or "local", **options)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise RLPromptError(f"cannot start or reach Ray (ray.address {address!r}): {err}") from None
        stop.reclaim()  # ray.init puts its own SIGTERM handler (a crash dump) over the clean stop's
    threads = config.threads_per_run or 1
    try:  # a run asking for more than the cluster has would wait for ever, silently
        have = ray.cluster_resources()
        for setting, need, kind in (("threads_per_run", threads, "CPU"),
                                    ("ray.gpus_per_run", config.ray.gpus_per_run, "GPU")):  # fmt: skip
            if need > have.get(kind, 0):
                raise RLPromptError(
                    f"{setting}: each run asks for {need:g} {kind}s, more than the Ray cluster's "
                    f"{have.get(kind, 0):g}; no run could start"
                )
    except BaseException:
        if started_here:
            ray.shutdown()
        raise
    remote = ray.remote(_worker_run).options(
        num_cpus=threads, num_gpus=config.ray.gpus_per_run, max_retries=0
    )
    several = len(grids) > 1
    pending = {}
    stop_files = [StopFile(root).path for _, root, _ in grids]
    for path in stop_files:  # an earlier stop's (a killed driver's): this attempt runs
        path.unlink(missing_ok=True)
    results: list[dict] = [{} for _ in grids]
    failures: list[list[dict]] = [[] for _ in grids]
    for g, (grid_config, root, jobs) in enumerate(grids):
        payload = to_dict(grid_config)
        for method, seed in jobs:
            kept = kept_result(Path(root) / f"{method}__s{seed}", method, seed) if resume else None
            if kept is not None:  # read here: no worker loads a model for it
                results[g][(method, seed)] = kept
                continue
            pending[remote.remote(payload, method, seed, str(root), resume, threads)] = (g, method, seed)
    total = len(pending) + sum(map(len, results))

    def by_grid() -> list[tuple[list, list[dict]]]:
        return [([found[j] for j in jobs if j in found], failed)
                for (_, _, jobs), found, failed in zip(grids, results, failures, strict=True)]  # fmt: skip

    def stopped() -> _Stopped:
        split = by_grid()
        return _Stopped([r for rs, _ in split for r in rs], [f for _, fs in split for f in fs], split)

    passed_on = False  # the stop request written for the workers
    try:
        while pending:
            try:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            except KeyboardInterrupt:  # a second signal: at once, with what finished so far
                for ref in pending:
                    ray.cancel(ref)
                raise stopped() from None
            if stop.requested and not passed_on:
                # Running runs stop at their next clean point with a checkpoint and report what they kept;
                # queued ones do not start
                for path in stop_files:
                    path.touch()
                passed_on = True
            for ref in done:
                g, method, seed = pending.pop(ref)
                root = grids[g][1]
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # the worker died (out of memory, a node lost): its run failed
                    outcome = {
                        "failure": record_failure(Path(root) / f"{method}__s{seed}", method, seed, err)
                    }
                if "skipped" in outcome:  # queued when the stop came
                    continue
                where = f"{Path(root).name} " if several else ""
                if "stopped" in outcome:
                    print(f"[stopping, {len(pending)} running or queued] {where}{method} seed {seed}: "
                          "stopped before it had anything to report (a resume starts it again)",
                          flush=True)  # fmt: skip
                    continue
                if "failure" in outcome:
                    failures[g].append(outcome["failure"])
                    line = f"FAILED: {outcome['failure']['error']}"
                else:
                    r = results[g][(method, seed)] = outcome["result"]
                    line = (f"dev {r.dev_score:.3f} test {r.test_score:.3f} ({r.learned}) "
                            f"in {r.train_seconds:.0f} s")  # fmt: skip
                failed = sum(map(len, failures))
                ended = sum(map(len, results)) + failed
                print(f"[{ended}/{total} done, {failed} failed, {len(pending)} running or queued] "
                      f"{where}{method} seed {seed}: {line}", flush=True)  # fmt: skip
        if passed_on:
            raise stopped()
    finally:
        for path in stop_files:
            path.unlink(missing_ok=True)
        if started_here:
            ray.shutdown()
    return by_grid()


_LOADED: dict[str, tuple] = {}  # per worker process: the task, its LM and test scorer, and a shared cache


def _worker_run(payload: dict, method: str, seed: int, root: str, resume: bool, threads: int) -> dict:
    """One run in a Ray worker: ``{"result": MethodResult}``, ``{"failure": ...}``, or on a stop request
    ``{"skipped": True}`` (not started) or ``{"stopped": True}`` (stopped with nothing to report)."""
    import torch

    from rlprompt.config import TrainConfig
    from rlprompt.kinds import kind_module
    from rlprompt.registry import task_kind
    from rlprompt.settings import from_dict

    torch.set_num_threads(threads)
    run_dir = Path(root) / f"{method}__s{seed}"
    stop = StopFile(root)
    if stop.requested:
        return {"skipped": True}
    try:
        config = from_dict(TrainConfig, payload, "the grid's config")
        # The whole config, not just the model and task: a worker outlives a grid (one Ray instance, several
        # drivers or a --resume with a new learning rate) and must not run it with the config it loaded first.
        key = json.dumps(payload, sort_keys=True)
        if key not in _LOADED:
            _LOADED.clear()
            loaded = kind_module(task_kind(config.task.name, config.task.kind)).load(config)
            _LOADED[key] = (loaded, {})
        loaded, cache = _LOADED[key]
        result = run_one(loaded.config, method, seed, loaded.task, loaded.lm, Path(root), False,
                         loaded.test_scorer, cache, False, stop, resume)  # fmt: skip
        return {"result": result}
    except KeyboardInterrupt:
        # The stop came before the run had anything to report (rl before its first evaluation): it is left
        # for the resume, as a queued one. Raised out of the task, Ray would call it cancelled.
        if stop.requested:
            return {"stopped": True}
        raise
    except Exception as err:
        return {"failure": record_failure(run_dir, method, seed, err)}
