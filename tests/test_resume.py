"""Checkpoints and resume: a run killed with SIGKILL (or stopped with SIGTERM) after a checkpoint and
resumed ends like the run that was never interrupted; the same config and seed give the same prompt.

The interrupted runs are real subprocesses of ``python -m rlprompt.train`` on the bert-tiny-splade bundle
(small and fast); the uninterrupted reference runs in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlprompt import load_prompt
from rlprompt.checkpoint import CHECKPOINT, StopAtOnce, StopRequest, load_checkpoint
from rlprompt.errors import run_cli
from rlprompt.methods import MethodResult
from rlprompt.models import register_model
from rlprompt.train import main as train_main
from tests.conftest import write_task

ROOT = Path(__file__).resolve().parents[1]
ROWS = [("a joy to watch .", 1), ("a dull , lifeless mess .", 0), ("warm and funny .", 1), ("tedious .", 0),
        ("one of the best films of the year .", 1), ("i hated every minute .", 0), ("a small gem .", 1),
        ("the plot makes no sense .", 0)]  # fmt: skip


SETTINGS = {
    # rl: 1,200 env steps, a checkpoint after each of its 6 dev evaluations (at rollout starts)
    "rl": ["--set", "total_timesteps=1200", "--set", "evaluations=6", "--set", "env.num_envs=4",
           "--set", "env.examples_per_reward=8", "--set", "rl.batch_size=20",
           "--set", "policy.adapter_hidden=32"],
    # rl with restarts whenever 2 prompt batches held fewer than 90% new prompts: the restart state (prompts
    # seen, the window, the best training prompt) and self-imitation's elite prompts are in the checkpoint;
    # its crossover children are drawn from the update count, so a resumed run draws the same; elite_by mean
    # on batches of 4 of the 8 training sentences: each prompt's rewards per batch are in the checkpoint
    "rl_restarts": ["--set", "total_timesteps=1200", "--set", "evaluations=6", "--set", "env.num_envs=4",
                    "--set", "env.examples_per_reward=4", "--set", "rl.batch_size=20",
                    "--set", "policy.adapter_hidden=32", "--set", "rl.restart_window=2",
                    "--set", "rl.restart_new_fraction=0.9", "--set", "rl.imitate_top=4",
                    "--set", "rl.imitate_crossover=4", "--set", "rl.elite_by=mean"],
    "soft_prompt": ["--set", "method=soft_prompt", "--set", "soft_prompt.steps=150", "--set", "evaluations=6",
                    "--set", "soft_prompt.batch_size=4"],
    "soft_prompt_rare_checkpoints": ["--set", "method=soft_prompt", "--set", "soft_prompt.steps=150",
                                     "--set", "evaluations=6", "--set", "soft_prompt.batch_size=4",
                                     "--set", "checkpoint_every=1000"],
    "lora": ["--set", "method=lora", "--set", "lora.steps=150", "--set", "evaluations=6",
             "--set", "lora.batch_size=4"],
    # full fine-tuning writes its checkpoint (every weight four times over) on a clean stop only
    "full_finetune": ["--set", "method=full_finetune", "--set", "full_finetune.steps=150",
                      "--set", "evaluations=6", "--set", "full_finetune.batch_size=4"],
    # lora behind two demonstrations: the run's config.yaml, which --resume reads, has them written out and
    # left out of training
    "lora_demonstrations": ["--set", "method=lora", "--set", "lora.steps=150", "--set", "evaluations=6",
                            "--set", "lora.batch_size=4", "--set", "task.demonstrations=2"],
    # bbt: 120 candidates in 12 generations of 10; CMA-ES's state is in the checkpoint
    "bbt": ["--set", "method=bbt", "--set", "total_timesteps=600", "--set", "evaluations=6",
            "--set", "bbt.intrinsic_dim=50", "--set", "bbt.population=10"],
    # search: 120 prompts in generations of 8; the population, its rewards and its sampler are checkpointed
    "search": ["--set", "method=search", "--set", "total_timesteps=600", "--set", "evaluations=6",
               "--set", "search.population=8"],
    "search_population_32": ["--set", "method=search", "--set", "total_timesteps=600",
                             "--set", "evaluations=6", "--set", "search.population=32"],
}  # fmt: skip


@pytest.fixture
def small_task(tmp_path) -> Path:
    """A user task of 8 sentences per split, so that test evaluation is quick."""
    return write_task(tmp_path, "small", ROWS)


@pytest.fixture
def common(small_task) -> list[str]:
    """Train CLI arguments for bert-tiny-splade on the small task."""
    return ["--quiet", "--set", "model=bert-tiny-splade", "--set", "heldout_sentences=10",
            "--set", f"task.name={small_task}"]  # fmt: skip


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# Every run whose numbers are compared runs in a subprocess with one thread: the same calls on the same
# shapes with the same thread count give the same floats on one machine, while another thread count
# (this process may use two) changes how sums are split and so their last bits.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start(run_dir: Path | None, args: list[str]) -> subprocess.Popen:
    where = ["--run-dir", str(run_dir)] if run_dir is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "rlprompt.train", *where, *args],
        cwd=ROOT, env={**os.environ, **THREADS}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def train_in_subprocess(run_dir: Path | None, args: list[str]) -> tuple[int, str, str]:
    """Run ``python -m rlprompt.train`` to the end with one thread; its exit code, stdout and stderr."""
    proc = start(run_dir, args)
    out, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        assert "warning" not in err.lower(), f"a library warning reached the console: {err[-2000:]}"
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Wait until ``path`` exists and is not empty."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size):
        assert proc.poll() is None, (
            f"the run ended before writing {path.name}: {proc.communicate()[1][-2000:]}"
        )
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


LEARNING = ("step", "dev_score", "best_dev_score", "train_loss", "greedy_prompt", "best_prompt",
            "reward_queries", "lm_tokens", "train_reward")  # fmt: skip


def learning(run_dir: Path) -> list[tuple]:
    """What a run learned and spent at each evaluation (all but the seconds). The reward queries match
    too: the score cache is part of the checkpoint."""
    return [tuple(map(r.get, LEARNING)) for r in rows(run_dir)]


def assert_same_learning(a: Path, b: Path, rel: float) -> None:
    """Steps, prompts, counts and accuracies equal; losses and rewards equal within ``rel``.

    A resumed run rebuilds its caches (the policy's backbone features, the LM's sentence prefixes) in
    batches of other compositions, which moves losses in their last bits: hence the tolerance. What is
    counted or chosen (prompts, reward queries, accuracies over a handful of examples) must not move."""
    first, second = learning(a), learning(b)
    assert len(first) == len(second), (first, second)
    for row_a, row_b in zip(first, second, strict=True):
        for key, x, y in zip(LEARNING, row_a, row_b, strict=True):
            if key in ("train_loss", "train_reward") and x is not None and y is not None:
                assert y == pytest.approx(x, rel=rel, abs=1e-9), (key, row_a, row_b)
            else:
                assert x == y, (key, row_a, row_b)


# (plain rl's checkpoint is a part of rl_restarts'; the SIGTERM test below resumes a plain rl run)
@pytest.mark.parametrize(
    "method", ["rl_restarts", "soft_prompt", "lora", "lora_demonstrations", "bbt", "search"]
)
def test_sigkill_after_first_checkpoint_then_resume_ends_like_an_unbroken_run(
    method, common, tmp_path, capsys
):
    args = [*common, *SETTINGS[method]]
    killed = tmp_path / "killed"
    proc = start(killed, args)
    wait_for(killed / CHECKPOINT, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    before = rows(killed)
    assert before, "a checkpoint is written after a dev evaluation"

    code, out, err = train_in_subprocess(None, ["--resume", str(killed), "--quiet"])
    assert code == 0, err
    assert "resuming at step" in out
    assert not (killed / CHECKPOINT).exists(), "a finished run drops its checkpoint"
    code, _, err = cli(["--resume", str(killed)], capsys)
    assert code == 2 and "this run finished; nothing to resume" in err

    code, _, err = train_in_subprocess(tmp_path / "unbroken", args)
    assert code == 0, err
    resumed, unbroken = (
        MethodResult.load(killed / "result.json"),
        MethodResult.load(tmp_path / "unbroken" / "result.json"),
    )
    assert resumed.steps == unbroken.steps and not resumed.interrupted
    steps = [r["step"] for r in rows(killed)]
    assert steps == sorted(set(steps)), f"duplicated or unordered steps: {steps}"
    assert_same_learning(killed, tmp_path / "unbroken", rel=1e-5)
    assert resumed.dev_score == unbroken.dev_score
    assert resumed.test_metrics == unbroken.test_metrics
    if method == "lora_demonstrations":
        task = yaml.safe_load((killed / "config.yaml").read_text())["task"]
        assert len(task["exclude_train"]) == 2 and task["demonstrations"] == 0 and "\n" in task["template"]
    if method.startswith("rl"):
        prompt = load_prompt(killed / "prompt.json")
        unbroken_prompt = load_prompt(tmp_path / "unbroken" / "prompt.json")
        assert prompt.token_ids == unbroken_prompt.token_ids
        assert prompt.metrics["steps"] == 1200
        assert prompt.metrics.get("restarts") == unbroken_prompt.metrics.get("restarts")
        assert prompt.metrics.get("restarts"), "the run restarted, so the restart state was resumed too"
    if method == "search":
        prompt = load_prompt(killed / "prompt.json")
        assert prompt.token_ids == load_prompt(tmp_path / "unbroken" / "prompt.json").token_ids
        assert prompt.metrics["steps"] == 120


@pytest.mark.parametrize("method, total", [("rl", 1200), ("bbt", 120)])  # bbt counts candidates
def test_sigterm_stops_cleanly_with_a_checkpoint_and_the_run_resumes(method, total, common, tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = start(run_dir, [*common, *SETTINGS[method]])
    wait_for(run_dir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert f"--resume {run_dir}" in err
    interrupted = MethodResult.load(run_dir / "result.json")
    assert interrupted.interrupted and interrupted.steps < total
    # the steps it reports are its checkpoint's, where a resume continues
    assert interrupted.steps == load_checkpoint(run_dir)["step"]
    # The best so far is exported and valid: RL's prompt, BBT's PEFT adapter.
    if method == "rl":
        load_prompt(run_dir / "prompt.json")
    else:
        assert json.loads((run_dir / "bbt" / "adapter_config.json").read_text())["num_virtual_tokens"] == 5

    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    done = MethodResult.load(run_dir / "result.json")
    assert not done.interrupted and done.steps == total
    steps = [r["step"] for r in rows(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == total


def test_full_finetuning_checkpoints_on_a_clean_stop_only_and_resumes_as_if_never_stopped(
    common, tmp_path, capsys, monkeypatch
):
    """Full fine-tuning's checkpoint holds the whole model four times over, so it is written only when a
    clean stop is asked for (SIGTERM, here during the dev evaluation at step 50 of 150; no checkpoint before
    it, where other methods write one after each evaluation); the resumed run then ends exactly as the run
    that was never stopped."""
    import rlprompt.methods.tuning as tuning

    real, calls, had_checkpoint = tuning.dev_accuracy, [], []
    run_dir, settings = tmp_path / "run", [*common, *SETTINGS["full_finetune"]]

    def stop_at_the_third_evaluation(*args, **kwargs):
        calls.append(1)
        had_checkpoint.append((run_dir / CHECKPOINT).exists())
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "dev_accuracy", stop_at_the_third_evaluation)
    code, out, err = cli(["--run-dir", str(run_dir), *settings], capsys)
    assert code == 130 and f"--resume {run_dir}" in err, err
    assert had_checkpoint == [False, False, False], "no checkpoint after the evaluations at steps 0 and 25"
    stopped = MethodResult.load(run_dir / "result.json")
    assert stopped.interrupted and stopped.steps == load_checkpoint(run_dir)["step"] == 50
    assert (run_dir / "model" / "config.json").is_file(), "the best weights so far are exported"

    monkeypatch.setattr(tuning, "dev_accuracy", real)
    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0 and "resuming at step 50" in out, err
    assert not (run_dir / CHECKPOINT).exists(), "a finished run drops its checkpoint"
    code, out, err = cli(["--run-dir", str(tmp_path / "unbroken"), *settings], capsys)
    assert code == 0, err
    assert_same_learning(run_dir, tmp_path / "unbroken", rel=1e-5)
    done, unbroken = (MethodResult.load(d / "result.json") for d in (run_dir, tmp_path / "unbroken"))
    assert not done.interrupted and done.steps == unbroken.steps == 150
    assert done.dev_score == unbroken.dev_score and done.test_metrics == unbroken.test_metrics


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
                                           (signal.SIGINT, signal.SIGTERM)])  # fmt: skip
def test_first_signal_asks_for_a_clean_stop_and_a_second_interrupts_at_once(first, second, capsys):
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), first)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert stop.requested
        with pytest.raises(StopAtOnce):
            os.kill(os.getpid(), second)
            time.sleep(1)
    assert "again: at once" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are given back


def send_two_sigterms() -> None:
    """SIGTERM this process twice: the first asks for a clean stop, the second's handler raises StopAtOnce
    (during the sleep after it)."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)


# A call each method makes on every training step, where the test sends its two signals.
HOOKS = {
    "rl": "rlprompt.scoring.LabelScorer.score",
    "soft_prompt": "rlprompt.methods.tuning.SoftPrompt.batch_logprobs",
}


@pytest.mark.parametrize("method, hook", HOOKS.items())
def test_a_second_signal_mid_training_ends_the_run_without_the_test_evaluation(
    method, hook, common, tmp_path, capsys, monkeypatch
):
    """The first SIGTERM would stop cleanly and evaluate the best checkpoint on test (minutes on a real
    test set); a second one, sent while training runs, ends the run there: exit 130, no result.json."""
    import importlib

    module_name, cls_name, attr = hook.rsplit(".", 2)
    cls = getattr(importlib.import_module(module_name), cls_name)
    real, calls = getattr(cls, attr), []

    def signalled_on_the_fifth_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            send_two_sigterms()
        return real(*args, **kwargs)

    monkeypatch.setattr(cls, attr, signalled_on_the_fifth_call)
    run_dir = tmp_path / "run"
    code, out, err = cli(["--run-dir", str(run_dir), *common, *SETTINGS[method]], capsys)
    assert len(calls) == 5  # nothing was scored after the second signal: no dev or test evaluation
    assert code == 130, err
    assert "evaluating the best" not in out and not (run_dir / "result.json").exists()
    assert err.strip().endswith(f"interrupted: continue with  python -m rlprompt.train --resume {run_dir}")


def test_an_interrupt_without_the_signal_handler_reports_the_steps_it_reached(
    common, tmp_path, capsys, monkeypatch
):
    """A KeyboardInterrupt raised with no signal handler in place (a cancelled worker thread) stops RL
    between checkpoints: the run says and records the steps it reached, says that a resume goes back to
    its checkpoint, and the resume ends at the full step count."""
    from rlprompt.scoring import LabelScorer

    run_dir = tmp_path / "run"
    real, after_checkpoint = LabelScorer.score, []

    def interrupted_mid_rollout(*args, **kwargs):
        if (run_dir / CHECKPOINT).exists():  # the third scoring call after the first checkpoint
            after_checkpoint.append(1)
            if len(after_checkpoint) == 3:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(LabelScorer, "score", interrupted_mid_rollout)
    code, out, err = cli(["--run-dir", str(run_dir), *common, *SETTINGS["rl"]], capsys)
    assert code == 130, err
    stopped = MethodResult.load(run_dir / "result.json")
    kept = load_checkpoint(run_dir)["step"]
    assert stopped.interrupted and kept < stopped.steps < 1200
    assert f"stopped at step {stopped.steps} (a resume continues from the checkpoint at step {kept})" in out
    assert load_prompt(run_dir / "prompt.json").metrics["steps"] == stopped.steps

    monkeypatch.setattr(LabelScorer, "score", real)
    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    done = MethodResult.load(run_dir / "result.json")
    assert not done.interrupted and done.steps == 1200


def test_an_interrupt_before_any_checkpoint_says_that_a_resume_starts_again(
    common, tmp_path, capsys, monkeypatch
):
    """With checkpoint_every=0 a run writes no checkpoint until a stop request; a KeyboardInterrupt that
    bypasses the signal handler after its first dev evaluation leaves none to go back to, and says so."""
    from rlprompt.scoring import LabelScorer

    run_dir = tmp_path / "run"
    real, calls = LabelScorer.score, []

    def interrupted_on_the_fifth_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(LabelScorer, "score", interrupted_on_the_fifth_call)
    settings = [*SETTINGS["rl"], "--set", "checkpoint_every=0"]
    code, out, err = cli(["--run-dir", str(run_dir), *common, *settings], capsys)
    assert code == 130, err
    stopped = MethodResult.load(run_dir / "result.json")
    assert stopped.interrupted and 0 < stopped.steps < 1200 and not (run_dir / CHECKPOINT).exists()
    assert f"stopped at step {stopped.steps} (no checkpoint was written yet: a resume starts again)" in out
    assert [p.name for p in run_dir.glob("PPO_*")] == ["PPO_1"]

    # The resume starts again, and its TensorBoard events replace the stopped attempt's (not PPO_2 beside).
    monkeypatch.setattr(LabelScorer, "score", real)
    stale = {p.name for p in (run_dir / "PPO_1").iterdir()}
    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert MethodResult.load(run_dir / "result.json").steps == 1200
    assert [p.name for p in run_dir.glob("PPO_*")] == ["PPO_1"]
    assert not stale & {p.name for p in (run_dir / "PPO_1").iterdir()}


# Where each method's test evaluation starts, and how many steps (prompts, candidates) its run trains.
TEST_EVALUATION = {
    "rl": ("rlprompt.methods.base.evaluate_artifact", 1200),
    "search": ("rlprompt.methods.base.evaluate_artifact", 120),
    # a population of 32: more of it than the last two dev evaluations take (4 each) stays unseen by dev
    "search_population_32": ("rlprompt.methods.base.evaluate_artifact", 120),
    "bbt": ("rlprompt.methods.bbt.scored_result", 120),
    "soft_prompt": ("rlprompt.methods.tuning.scored_result", 150),
    # no checkpoint during training (every 1,000 steps of 150): the end of training still writes one
    "soft_prompt_rare_checkpoints": ("rlprompt.methods.tuning.scored_result", 150),
}


@pytest.mark.parametrize("method", TEST_EVALUATION)
def test_a_run_stopped_during_its_test_evaluation_resumes_there_without_training_again(
    method, common, tmp_path, capsys, monkeypatch
):
    """Two signals during the test evaluation end the run there (exit 130, no result.json); --resume
    goes straight back to the test evaluation: nothing is trained or evaluated on dev again."""
    import importlib

    hook, total = TEST_EVALUATION[method]
    module_name, attr = hook.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, attr)

    def signalled_twice(*args, **kwargs):
        send_two_sigterms()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, signalled_twice)
    run_dir = tmp_path / "run"
    code, out, err = cli(["--run-dir", str(run_dir), *common, *SETTINGS[method]], capsys)
    assert code == 130, err
    assert not (run_dir / "result.json").exists() and (run_dir / CHECKPOINT).exists()
    logged = (run_dir / "metrics.jsonl").read_text()  # each row holds its seconds: a retrained row differs
    exported = load_prompt(run_dir / "prompt.json").token_ids if method.startswith(("rl", "search")) else None

    monkeypatch.setattr(module, attr, real)
    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert f"training was over (step {total}): resuming at its test evaluation" in out
    assert (run_dir / "metrics.jsonl").read_text() == logged
    result = MethodResult.load(run_dir / "result.json")
    assert result.steps == total and not result.interrupted
    assert not (run_dir / CHECKPOINT).exists()
    if exported is not None:
        assert load_prompt(run_dir / "prompt.json").token_ids == exported


def test_killed_comparison_resumes_keeping_the_runs_that_finished(common, tmp_path, capsys):
    run_dir = tmp_path / "compare"
    args = [*common, *SETTINGS["soft_prompt"], "--set", "methods=[manual, soft_prompt]"]
    proc = start(run_dir, args)
    wait_for(run_dir / "soft_prompt__s0" / CHECKPOINT, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps it and closes its pipes
    manual_result = (run_dir / "manual__s0" / "result.json").read_text()

    code, out, err = cli(["--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert "manual seed 0: finished before, kept" in out
    assert "soft_prompt seed 0: resuming at step" in out
    assert (run_dir / "manual__s0" / "result.json").read_text() == manual_result
    assert (run_dir / "report.md").exists()
    assert "soft_prompt" in (run_dir / "report.md").read_text()


def tiny_gpt2_rl(task: Path) -> list[str]:
    """Train CLI arguments for a short RL run of tiny-gpt2 on ``task``, every batch its 8 sentences."""
    return ["--quiet", "--set", "model=tiny-gpt2", "--set", f"task.name={task}",
            "--set", "total_timesteps=400", "--set", "evaluations=4",
            "--set", "env.num_envs=4", "--set", "env.examples_per_reward=8", "--set", "rl.batch_size=20",
            "--set", "policy.adapter_hidden=32", "--set", "vocab.size=50"]  # fmt: skip


def test_same_config_and_seed_give_the_same_prompt(tiny_gpt2, small_task, tmp_path, capsys):
    register_model(tiny_gpt2)
    args = tiny_gpt2_rl(small_task)
    prompts = []
    for name in ("first", "second"):
        code, _, err = cli([*args, "--run-dir", str(tmp_path / name)], capsys)
        assert code == 0, err
        prompts.append(load_prompt(tmp_path / name / "prompt.json"))
    assert prompts[0].token_ids == prompts[1].token_ids
    # Both runs are in this process, with the same thread count and fresh caches: the same calls on the
    # same shapes, so the numbers agree exactly.
    assert learning(tmp_path / "first") == learning(tmp_path / "second")


def test_elite_by_mean_is_max_where_every_batch_is_the_whole_training_set(
    tiny_gpt2, small_task, tmp_path, capsys
):
    """rl.elite_by: with env.examples_per_reward the training set's size (8), every batch reads the same
    sentences, so ranking a prompt by the mean over its distinct batches is ranking it by its best batch:
    with restarts and self-imitation (which rank by it), mean and max learn exactly the same."""
    register_model(tiny_gpt2)
    args = [*tiny_gpt2_rl(small_task), "--set", "rl.imitate_top=4", "--set", "rl.restart_window=2",
            "--set", "rl.restart_new_fraction=0.9", "--set", "env.prompt_length=2"]  # fmt: skip
    prompts = []
    for rank in ("max", "mean"):
        code, _, err = cli([*args, "--set", f"rl.elite_by={rank}", "--run-dir", str(tmp_path / rank)], capsys)
        assert code == 0, err
        prompts.append(load_prompt(tmp_path / rank / "prompt.json"))
    assert prompts[0].token_ids == prompts[1].token_ids
    assert learning(tmp_path / "max") == learning(tmp_path / "mean")
    restarts = [p.metrics["restarts"] for p in prompts]
    assert restarts[0] and restarts[0] == restarts[1]  # the restarts (to the best prompt) came, and alike


@pytest.mark.parametrize("damage", ["garbage", "a list", "no step", "empty config", "broken result"])
def test_a_damaged_run_directory_is_named_not_trained_over(damage, common, tmp_path, capsys):
    """--resume on a run whose files were damaged: a checkpoint that is not one, or an emptied config.yaml,
    stops with one line naming the file (never a traceback, never a run with the defaults); an unreadable
    result.json is said before the run is continued, not silently trained over."""
    import torch

    run_dir = tmp_path / "run"
    code, _, err = cli(["--run-dir", str(run_dir), *common, "--set", "method=manual"], capsys)
    assert code == 0, err
    checkpoint = run_dir / CHECKPOINT
    if damage == "broken result":
        (run_dir / "result.json").write_text('{"x', encoding="utf-8")
        code, out, err = cli(["--resume", str(run_dir)], capsys)
        assert code == 0, err
        assert f"warning: {run_dir / 'result.json'}: unreadable (JSONDecodeError)" in err, err
        assert MethodResult.load(run_dir / "result.json").method == "manual"  # written again
        return
    (run_dir / "result.json").unlink()  # an interrupted run's directory
    if damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
        expected = f"{checkpoint}: unreadable checkpoint"
    elif damage == "a list":
        torch.save([1, 2], checkpoint)
        expected = f"{checkpoint}: not an rlprompt checkpoint (no 'method' and 'step')"
    elif damage == "no step":
        torch.save({"method": "manual"}, checkpoint)
        expected = f"{checkpoint}: not an rlprompt checkpoint (no 'method' and 'step')"
    else:
        (run_dir / "config.yaml").write_text("", encoding="utf-8")
        expected = f"{run_dir / 'config.yaml'}: empty; a run's config.yaml holds the settings it was started"
    code, out, err = cli(["--resume", str(run_dir)], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert not (run_dir / "result.json").exists(), "nothing ran"


def test_the_library_overwrites_only_a_run_directory(common, tmp_path):
    """rlprompt.driver.train(overwrite=True), called from Python, deletes only a directory holding a run,
    as the command line does (which checks it before any model loads)."""
    from rlprompt.config import load_train_config
    from rlprompt.driver import train
    from rlprompt.errors import RLPromptError

    sets = [value for flag, value in zip(common, common[1:], strict=False) if flag == "--set"]
    config = load_train_config(None, [*sets, "method=manual"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(RLPromptError, match="not a run directory \\(no config.yaml\\); --overwrite only"):
        train(config, progress=False, run_dir=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"


def test_run_directory_rules(common, tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    code, _, err = cli(["--run-dir", str(existing), *common], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"{existing}: run directory already exists" in err and "--overwrite" in err
    assert (existing / "notes.txt").read_text() == "mine", "nothing touched"
    # --overwrite deletes the directory: only one that holds a run (its config.yaml)
    code, _, err = cli(["--run-dir", str(existing), "--overwrite", *common], capsys)
    assert code == 2 and "--overwrite only replaces runs" in err
    assert f"{existing}: not a run directory (no config.yaml)" in err
    assert (existing / "notes.txt").read_text() == "mine", "nothing touched"

    (existing / "config.yaml").write_text("method: manual\n")  # an earlier run's
    code, out, err = cli(
        ["--run-dir", str(existing), "--overwrite", *common, "--set", "method=manual"], capsys
    )
    assert code == 0, err
    assert not (existing / "notes.txt").exists() and (existing / "result.json").exists()

    code, _, err = cli(["--resume", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such run directory" in err
    code, _, err = cli(["--resume", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path}: not a run directory (no config.yaml)" in err
    code, _, err = cli(["--resume", str(existing), "--set", "seed=1"], capsys)
    assert code == 2 and "--resume --set seed=1: only learning rates and gradient clipping" in err

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, _, err = cli(["--run-dir", str(a_file), *common], capsys)
    assert code == 2 and f"--run-dir {a_file}: is a file, not a directory" in err
    code, _, err = cli(["--run-dir", str(a_file / "run"), *common, "--dry-run"], capsys)
    assert code == 2 and f"--run-dir {a_file / 'run'}: is under {a_file}, a file, not a directory" in err

    # --overwrite replaces a directory only once the new config has passed its checks
    code, _, err = cli(["--run-dir", str(existing), "--overwrite", *common, "--set", "model=gpt-17"], capsys)
    assert code == 2 and "unknown model 'gpt-17'" in err
    assert (existing / "result.json").exists(), "the old run is still there"


def test_one_process_at_a_time_in_a_run_directory_and_kept_runs_stay_as_they_ran(common, tmp_path, capsys):
    """Two processes on one directory each took the other's runs as failed (phantom failures that a resume
    never cleared); a resume rewrote a kept run's config.yaml with the resume's settings."""
    import os

    from rlprompt.files import DirectoryLock

    run_dir = tmp_path / "grid"
    run_dir.mkdir()
    held = DirectoryLock(run_dir)  # another open file: flock refuses it as it would another process
    args = ["--run-dir", str(run_dir), *common, "--set", "methods=[manual]", "--set", "seeds=[0, 1]"]
    code, _, err = cli(args, capsys)
    assert code == 2 and f"{run_dir}: in use by another rlprompt process (pid {os.getpid()})" in err
    held.release()
    code, _, err = cli(args, capsys)
    assert code == 0, err
    assert not (run_dir / DirectoryLock.NAME).exists(), "released and removed when the grid ends"
    kept = (run_dir / "manual__s0" / "config.yaml").read_text()
    (run_dir / "manual__s1" / "failure.json").write_text('{"method": "manual", "seed": 1, "error": "E"}')
    code, out, err = cli(["--resume", str(run_dir), "--quiet", "--set", "rl.learning_rate=0.0001"], capsys)
    assert code == 0, err
    assert "manual seed 0: finished before, kept" in out
    assert (run_dir / "manual__s0" / "config.yaml").read_text() == kept
    assert not (run_dir / "manual__s1" / "failure.json").exists()
    assert "Failed runs" not in (run_dir / "report.md").read_text()


def test_checkpoints_wait_for_a_prompt_boundary(tiny_gpt2, small_task, tmp_path, capsys, monkeypatch):
    """With rollouts of 3 steps and prompts of 5 tokens, rollouts often start mid-prompt; a checkpoint
    there would lose the half-written prompts, so it waits for a rollout that starts on a boundary."""
    import rlprompt.methods.rl as rl_method

    register_model(tiny_gpt2)
    saved, real = [], rl_method.save_checkpoint

    def record(run_dir, state):
        saved.append(state)
        real(run_dir, state)

    monkeypatch.setattr(rl_method, "save_checkpoint", record)
    args = ["--quiet", "--set", "model=tiny-gpt2", "--set", f"task.name={small_task}",
            "--run-dir", str(tmp_path / "r"),
            "--set", "total_timesteps=600", "--set", "evaluations=10", "--set", "env.num_envs=4",
            "--set", "rl.n_steps=3", "--set", "rl.batch_size=12", "--set", "policy.adapter_hidden=32",
            "--set", "vocab.size=50"]  # fmt: skip
    code, _, err = cli(args, capsys)
    assert code == 0, err
    steps = [state["step"] for state in saved]
    assert len(steps) >= 3 and all(step % 20 == 0 for step in steps), steps  # 4 envs x 5 tokens


def test_a_run_written_before_a_setting_existed_resumes_as_it_began(tmp_path):
    """--resume reads the run's own config.yaml; a key added since (rl.prompt_rule, whose default changed
    which prompt RL exports) takes the value the run began with, not the new default."""
    from rlprompt.config import load_resumed_config, load_train_config
    from rlprompt.runs import write_config

    write_config(load_train_config(None, ["method=rl"]), tmp_path)
    path = tmp_path / "config.yaml"
    assert load_resumed_config(path, []).rl.prompt_rule == "top_3_dev_reward"  # written with the key
    data = yaml.safe_load(path.read_text())
    del data["rl"]["prompt_rule"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    resumed = load_resumed_config(path, ["rl.learning_rate=1e-4"])
    assert resumed.rl.prompt_rule == "dev_accuracy" and resumed.rl.learning_rate == 1e-4
