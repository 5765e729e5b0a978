"""Calibration: a planted label prior is recovered and removed; no estimate reads the evaluated inputs
unless the transductive option is named; the CLI reproduces a fixed case on the offline model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlprompt.calibration import (
    CALIBRATIONS,
    Calibration,
    calibrate,
    log_prior,
    normalised,
    task_calibration,
)
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.evaluate import main as evaluate_main
from rlprompt.evaluation import evaluate_prompts, make_scorer
from rlprompt.metrics import classification_metrics
from rlprompt.tasks import Example, load_task, sampled_test
from tests.conftest import write_task

ROWS = [("a joy to watch .", 1), ("a dull , lifeless mess .", 0), ("warm and funny .", 1), ("tedious .", 0),
        ("one of the best films of the year .", 1), ("i hated every minute .", 0)]  # fmt: skip


@pytest.fixture
def tiny_task_files(tmp_path):
    """A user task whose splits hold the same sentences under different ids (uids name the split)."""
    return write_task(tmp_path, "calib", ROWS)


def test_a_planted_prior_is_recovered_and_removed():
    rng = np.random.default_rng(0)
    n, classes = 400, 3
    labels = rng.integers(classes, size=n)
    # Clean scores favour the right class; a planted bias then pushes every input toward class 2.
    clean = rng.normal(0, 1, (n, classes))
    clean[np.arange(n), labels] += 2.0
    bias = np.array([0.0, -1.0, 3.5])
    biased = normalised(clean + bias)[None]  # one prompt
    prior = log_prior(biased)[0]
    clean_prior = log_prior(normalised(clean)[None])[0]
    # The estimate moves by the planted bias, up to a constant shared by the classes.
    moved = prior - clean_prior
    np.testing.assert_allclose(moved - moved.mean(), bias - bias.mean(), atol=1e-6)
    raw = classification_metrics(biased[0], labels)
    fixed = classification_metrics(calibrate(biased, log_prior(biased))[0], labels)
    unbiased = classification_metrics(clean, labels)
    assert raw.accuracy < 0.5 and raw.per_class_accuracy[2] > 0.95, "the bias wins most inputs"
    assert fixed.accuracy > unbiased.accuracy - 0.01, "calibration gets back what the bias cost"
    assert min(fixed.per_class_accuracy) > 0.8, "every class is predicted again"


def test_calibration_without_a_prior_leaves_scores_alone():
    scores = np.log(np.array([[[0.2, 0.8], [0.6, 0.4]]]))
    assert calibrate(scores, None) is not None and np.array_equal(calibrate(scores, None), scores)
    calibrated = calibrate(scores, log_prior(scores))
    np.testing.assert_allclose(calibrated.mean(-2), 0, atol=1e-6), "batch calibration centres its inputs"


class Recorder:
    """A scorer wrapper that records the example ids of every call."""

    def __init__(self, scorer):
        self.inner, self.calls = scorer, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, prompts, examples, progress=False):
        self.calls.append([ex.uid for ex in examples])
        return self.inner.score(prompts, examples, progress)


@pytest.mark.parametrize("method", CALIBRATIONS)
def test_no_estimate_reads_the_evaluated_inputs_unless_transductive(method, tiny_gpt2, tiny_task_files):
    task = load_task(str(tiny_task_files))
    test = task.examples("test")
    scorer = Recorder(make_scorer(tiny_gpt2, task, prompt_budget=8))
    calibration = task_calibration(method, task)
    (result,) = evaluate_prompts(scorer, test, ["It was"], calibration=calibration)
    evaluation, *reference = scorer.calls
    assert evaluation == [ex.uid for ex in test]
    read = {uid for call in reference for uid in call}
    unlabelled = {ex.uid for ex in task.examples("train") + task.examples("dev")}
    if method == "none":
        assert not reference and result.metrics == result.raw
    elif method == "transductive":
        assert read == set(evaluation), "transductive: the evaluated inputs, and only those"
    else:
        assert read and not read & set(evaluation), f"{method} read the evaluated inputs"
        if method == "batch":
            assert read == unlabelled
        elif method == "contextual":
            assert read == {"content-free/N/A", "content-free/", "content-free/[MASK]"}
        else:
            assert len(read) == 20 and all(uid.startswith("domain/") for uid in read)


def test_labels_are_never_read(tiny_gpt2, tiny_task_files):
    """Flipping every training and dev label leaves the batch prior and the calibrated test scores alone."""
    task = load_task(str(tiny_task_files))
    flipped = Calibration("batch", [Example(ex.uid, ex.text, 1 - ex.label) for ex in task_calibration(
        "batch", task).unlabelled])  # fmt: skip
    scorer = make_scorer(tiny_gpt2, task, prompt_budget=8)
    test = task.examples("test")
    (a,) = evaluate_prompts(scorer, test, ["It was"], calibration=task_calibration("batch", task))
    (b,) = evaluate_prompts(scorer, test, ["It was"], calibration=flipped)
    assert a.metrics == b.metrics  # the same cached scores: exactly equal


def test_training_runs_cannot_calibrate_transductively(tmp_path):
    from rlprompt.config import load_train_config

    with pytest.raises(RLPromptError, match="'calibration' must be one of 'none', 'batch', 'contextual', "
                       "'domain', got 'transductive'"):  # fmt: skip
        load_train_config(None, ["calibration=transductive"])


@pytest.mark.real_model
def test_evaluate_cli_reproduces_a_fixed_calibrated_case(smol, capsys):
    """The manual and the empty prompt on 16 SST-2 test sentences (``--limit 16``: drawn with seed 0),
    batch calibration on SmolLM2 (its prior from the 64 training and dev sentences). Every calibrated
    decision is at least 0.02 nats from a tie, so the accuracies hold on any CPU."""
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--model", "smollm2-135m", "--task", "sst-2", "--limit", "16",
                                "--calibration", "batch", "--json"])  # fmt: skip
    assert done.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["calibration"] == "batch"
    manual, empty = payload["results"]
    assert (manual["prompt"], empty["prompt"]) == ("It was", "")
    assert (manual["raw"]["accuracy"], manual["accuracy"]) == (RAW_MANUAL, CALIBRATED_MANUAL)
    assert (empty["raw"]["accuracy"], empty["accuracy"]) == (RAW_EMPTY, CALIBRATED_EMPTY)
    # The margins behind the claim above, from the library directly.
    task = load_task("sst-2")
    scorer = make_scorer(smol, task, prompt_budget=8)
    examples = sampled_test(task.examples("test"), 16)
    logprobs = scorer.score(["It was", ""], examples)
    prior = log_prior(scorer.score(["It was", ""], task_calibration("batch", task).unlabelled))
    calibrated = calibrate(logprobs, prior)
    assert np.abs(calibrated[..., 1] - calibrated[..., 0]).min() > 0.02


# Measured on 2026-12-07 (AMD EPYC, AVX2, float32): 9, 12, 9 and 13 of the 16 right; the closest calibrated
# decision was 0.051 nats from a tie, the closest raw one 0.41.
RAW_MANUAL, CALIBRATED_MANUAL, RAW_EMPTY, CALIBRATED_EMPTY = 9 / 16, 12 / 16, 9 / 16, 13 / 16


def test_a_calibrated_run_records_its_calibration_and_evaluate_follows_it(tiny_gpt2, tiny_task_files, capsys):
    from rlprompt.export import load_prompt
    from rlprompt.methods import MethodResult
    from rlprompt.models import register_model
    from rlprompt.train import main as train_main

    register_model(tiny_gpt2)
    run_dir = tiny_task_files.parent / "run"
    argv = ["--quiet", "--run-dir", str(run_dir), "--set", "model=tiny-gpt2",
            "--set", f"task.name={tiny_task_files}", "--set", "calibration=batch",
            "--set", "total_timesteps=80", "--set", "evaluations=2", "--set", "env.num_envs=4",
            "--set", "env.examples_per_reward=6", "--set", "rl.batch_size=20", "--set", "vocab.size=30",
            "--set", "policy.adapter_hidden=16"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    prompt = load_prompt(run_dir / "prompt.json")
    result = MethodResult.load(run_dir / "result.json")
    assert prompt.calibration == "batch" and result.calibration == "batch" == result.calibrated_with
    assert (
        result.test_score == result.test_metrics["accuracy_calibrated"]
    )  # the headline is the calibrated one
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", str(run_dir / "prompt.json"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert done.value.code == 0 and payload["calibration"] == "batch", "the prompt file's own calibration"
    assert payload["results"][0]["accuracy"] == pytest.approx(result.test_score, abs=1 / len(ROWS) / 2)
    assert payload["results"][0]["raw"]["accuracy"] == pytest.approx(
        result.test_metrics["accuracy_raw"], abs=0.5 / len(ROWS)
    )


def test_the_calibrated_reward_scores_each_prompt_without_its_prior(tiny_gpt2, tiny_task_files):
    """With a reward prior, a prompt that says "great" for everything is worth no more than chance."""
    from rlprompt.envs.prompt_env import PromptEnv, gap_reward

    task = load_task(str(tiny_task_files))
    scorer = make_scorer(tiny_gpt2, task, prompt_budget=8)
    train = task.examples("train")
    labels = np.array([ex.label for ex in train])
    vocab = tiny_gpt2.encode(" good bad movie")
    prompt = tuple(vocab[:2])
    env = PromptEnv(scorer, train, vocab, prompt_length=2, examples_per_reward=len(train),
                    reward_prior=lambda prompts, logprobs: log_prior(logprobs))  # fmt: skip
    reward, _ = env.score_prompts([prompt], np.random.default_rng(0))
    logprobs = scorer.score([prompt], train)
    expected = gap_reward(calibrate(logprobs, log_prior(logprobs)), labels)
    np.testing.assert_allclose(reward, expected, rtol=1e-6)  # the scores of one cached call: same floats
    # A prompt's constant lean is gone: shifting every score of a class changes nothing after calibration.
    shifted = logprobs + np.array([3.0, -1.0])
    np.testing.assert_allclose(
        gap_reward(calibrate(shifted, log_prior(shifted)), labels), expected, rtol=1e-5, atol=1e-5
    )
