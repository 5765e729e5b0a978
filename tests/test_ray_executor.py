"""Grids through a real local Ray instance (2 CPUs, started once for the module): the same prompts,
accuracies and report as the local executor at the same thread count, and a failed run that the grid
survives and --resume reruns once its fault is removed. Ray workers are other processes, so the task LM is
a tiny GPT-2 saved to a directory (a model name any process can load)."""

from __future__ import annotations

import json
import socket

import pytest

from rlprompt.errors import run_cli
from rlprompt.methods import MethodResult
from rlprompt.train import main as train_main
from tests.conftest import write_task
from tests.test_methods import ROWS

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_gpt2):
    directory = tmp_path_factory.mktemp("tiny-gpt2-model")
    tiny_gpt2.model.save_pretrained(directory)
    tiny_gpt2.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def grid_task(tmp_path):
    return write_task(tmp_path, "task", ROWS)


# A small RL run (40 prompts) and the manual prompt, on two seeds: four runs.
GRID = ["methods=[manual, rl]", "seeds=[0, 1]", "total_timesteps=200", "evaluations=2", "env.num_envs=4",
        "env.examples_per_reward=4", "rl.n_steps=5", "rl.batch_size=20", "vocab.size=50", "threads_per_run=1",
        "heldout_sentences=4"]  # fmt: skip


def _grid(task, model, out, capsys, *settings, expect=0):
    argv = ["--quiet", "--set", f"task.name={task}", "--set", f"model={model}", "--set", f"output_dir={out}"]
    for setting in [*GRID, *settings]:
        argv += ["--set", setting]
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    captured = capsys.readouterr()
    assert done.value.code == expect, captured.err
    (root,) = out.iterdir()
    return root, captured.out


def _without_times(report: str) -> str:
    """The report with the train-time column blanked (timings differ between executors)."""
    lines = []
    for line in report.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) > 9 and cells[8].endswith(" s"):
            cells[8] = "-"
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def test_ray_grid_matches_the_local_grid(ray_instance, tiny_dir, grid_task, tmp_path, capsys):
    local, _ = _grid(grid_task, tiny_dir, tmp_path / "local", capsys)
    remote, out = _grid(grid_task, tiny_dir, tmp_path / "ray", capsys, "executor=ray")
    assert out.count("done, ") == 4 and "[4/4 done, 0 failed, 0 running or queued]" in out
    for run in ("manual__s0", "manual__s1", "rl__s0", "rl__s1"):
        a, b = (MethodResult.load(root / run / "result.json") for root in (local, remote))
        assert (a.learned, a.dev_score, a.test_metrics, a.steps) == (
            b.learned,
            b.dev_score,
            b.test_metrics,
            b.steps,
        )
        prompt_a, prompt_b = (
            json.loads((root / run / "prompt.json").read_text()) for root in (local, remote)
        )
        assert prompt_a["token_ids"] == prompt_b["token_ids"]
    report_local, report_ray = ((root / "report.md").read_text() for root in (local, remote))
    assert "| rl | 0 |" in report_ray
    assert _without_times(report_local) == _without_times(report_ray)


def test_a_failed_ray_run_is_reported_and_resume_reruns_it(
    ray_instance, tiny_dir, grid_task, tmp_path, capsys
):
    # A step size that overflows the policy's weights: every RL run fails in its worker, at its NaN guard
    # (a fault the driver's checks cannot see before the runs start).
    root, out = _grid(grid_task, tiny_dir, tmp_path / "runs", capsys, "executor=ray",
                      "rl.learning_rate=1e30", expect=1)  # fmt: skip
    assert "[4/4 done, 2 failed, 0 running or queued]" in out
    for seed in (0, 1):
        failure = json.loads((root / f"rl__s{seed}" / "failure.json").read_text())
        assert "rl.learning_rate" in failure["error"]
        assert (root / f"manual__s{seed}" / "result.json").exists()
    assert "## Failed runs" in (root / "report.md").read_text()
    kept = (root / "manual__s0" / "result.json").stat().st_mtime_ns

    with pytest.raises(SystemExit) as done:  # the fault is removed
        run_cli(train_main, ["--quiet", "--resume", str(root), "--executor", "ray",
                             "--set", "rl.learning_rate=3e-4"])  # fmt: skip
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "[4/4 done, 0 failed, 0 running or queued]" in out
    assert "manual seed 0: finished before, kept" in out and "manual seed 1: finished before, kept" in out
    assert all((root / f"rl__s{seed}" / "result.json").exists() for seed in (0, 1))
    assert not any(root.glob("*/failure.json"))
    assert (root / "manual__s0" / "result.json").stat().st_mtime_ns == kept
    assert "## Failed runs" not in (root / "report.md").read_text()


def test_a_grid_over_data_splits_on_ray_submits_every_split_at_once_and_reports_as_locally(
    ray_instance, tiny_dir, tmp_path, capsys
):
    """task.seeds on Ray: the runs of both splits go out together (one progress count), and the splits'
    results and the combined report are the local executor's."""
    roots = {}
    for executor in ("local", "ray"):
        roots[executor] = tmp_path / executor
        argv = ["--quiet", "--set", f"model={tiny_dir}", "--set", "task.seeds=[16-13, 16-21]",
                "--set", "methods=[manual]", "--set", "seeds=[0, 1]", "--set", "threads_per_run=1",
                "--set", f"executor={executor}", "--run-dir", str(roots[executor])]  # fmt: skip
        with pytest.raises(SystemExit) as done:
            run_cli(train_main, argv)
        captured = capsys.readouterr()
        assert done.value.code == 0, captured.err
        if executor == "ray":
            assert "[4/4 done, 0 failed, 0 running or queued]" in captured.out
            assert "split-16-21 manual seed 1" in captured.out
    reports = [json.loads((roots[e] / "report.json").read_text()) for e in ("local", "ray")]
    for report in reports:
        for run in report["methods"]["manual"]["runs"]:
            run.pop("train_seconds")
        report["methods"]["manual"].pop("train_seconds")
    assert reports[0] == reports[1] and reports[0]["data_seeds"] == ["16-13", "16-21"]


def test_runs_that_ask_for_more_than_the_cluster_has_are_refused(
    ray_instance, tiny_dir, grid_task, tmp_path, capsys, monkeypatch
):
    """A Ray task asking for more CPUs or GPUs than the cluster has waits for ever, silently: such a grid
    is refused in one line, on an instance started here before anything is written, on a cluster once
    connected."""
    out = tmp_path / "out"
    argv = ["--quiet", "--set", f"task.name={grid_task}", "--set", f"model={tiny_dir}", "--set",
            f"output_dir={out}", "--set", "methods=[manual]", "--set", "seeds=[0, 1]",
            "--set", "executor=ray"]  # fmt: skip
    for settings, message in (
        (["threads_per_run=3", "ray.num_cpus=2"], "'threads_per_run' is 3, more than the 2 CPUs of the Ray"),
        (["ray.gpus_per_run=64"], "'ray.gpus_per_run' is 64, more than this machine's"),
    ):
        with pytest.raises(SystemExit) as done:
            run_cli(train_main, [*argv, *(a for s in settings for a in ("--set", s))])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists(), "refused before anything is written"
    with socket.socket() as s:  # a port nothing listens on: Ray would wait minutes on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, [*argv, "--set", f"ray.address=127.0.0.1:{port}", "--dry-run"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"ray.address '127.0.0.1:{port}': nothing answers there" in err, err
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # a cluster (the module's instance): checked once connected
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, [*argv, "--set", "threads_per_run=3"])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert (
        "threads_per_run: each run asks for 3 CPUs, more than the Ray cluster's 2; no run could start" in err
    )


def test_a_stopped_ray_grid_lets_its_running_runs_checkpoint_and_resumes(
    ray_instance, tiny_dir, grid_task, tmp_path, capsys
):
    """The first Ctrl-C stops a Ray grid as it stops a local one: the running runs reach a clean point,
    checkpoint and report what they kept (marked interrupted); queued runs do not start. Before, every
    task was cancelled at once and the work since its last checkpoint was lost."""
    import os
    import signal
    import threading
    import time

    out = tmp_path / "runs"

    def interrupt_after_a_checkpoint():
        deadline = time.monotonic() + 120
        while not list(out.glob("*/rl__s*/checkpoint.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_a_checkpoint, daemon=True).start()
    long = ["methods=[rl]", "seeds=[0, 1, 2]", "total_timesteps=6000", "evaluations=30", "executor=ray"]
    root, printed = _grid(grid_task, tiny_dir, out, capsys, *long, expect=130)
    stopped = [MethodResult.load(p) for p in sorted(root.glob("rl__s*/result.json"))]
    assert stopped and all(r.interrupted and 0 < r.steps < 6000 for r in stopped), printed
    assert not (root / "rl__s2" / "result.json").exists(), "a queued run does not start"
    assert "interrupted)" in (root / "report.md").read_text()
    assert not (root / ".stop").exists()
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--resume", str(root), "--quiet", "--executor", "ray"])
    assert done.value.code == 0, capsys.readouterr().err
    finished = [MethodResult.load(p) for p in sorted(root.glob("rl__s*/result.json"))]
    assert len(finished) == 3 and not any(r.interrupted for r in finished)


def test_a_ray_run_stopped_before_it_has_anything_to_report_is_left_for_the_resume(
    tiny_dir, grid_task, tmp_path, monkeypatch
):
    """A stop that reaches a worker's run before its first evaluation (rl has no prompt to export then)
    leaves the run to the resume, like a queued one; raised out of the Ray task, the interrupt was taken for
    a cancelled task and the run recorded as failed. Without a stop request an interrupt is not kept."""
    import torch

    from rlprompt import executors
    from rlprompt.config import load_train_config
    from rlprompt.settings import to_dict

    config = load_train_config(None, [*GRID, f"task.name={grid_task}", f"model={tiny_dir}"])
    root = tmp_path / "grid"
    root.mkdir()
    # The worker's function runs in this process here: its thread count and loaded model stay its own.
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    monkeypatch.setattr(executors, "_LOADED", {})

    def stopped_early(*args, **kwargs):
        executors.StopFile(root).path.touch()  # the driver's stop request, then the run's interrupt
        raise KeyboardInterrupt

    monkeypatch.setattr(executors, "run_one", stopped_early)
    assert executors._worker_run(to_dict(config), "rl", 0, str(root), False, 1) == {"stopped": True}
    assert not (root / "rl__s0" / "failure.json").exists()
    executors.StopFile(root).path.unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(executors, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        executors._worker_run(to_dict(config), "rl", 0, str(root), False, 1)
