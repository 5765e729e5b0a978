"""benchmarks/label_word_sets.py: class scores from word sets, and the batch-calibrated figures it prints,
on log-probs built by hand so each figure is known in advance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


def test_a_class_scores_its_words_summed_or_averaged_in_log_space():
    sets = benchmark_module("label_word_sets")
    # One input, four words: class 0 reads words 0 and 2, class 1 words 1 and 3.
    logprobs = np.log(np.array([[0.1, 0.2, 0.3, 0.05]]))
    summed = sets.class_scores(logprobs, [[0, 2], [1, 3]], "sum")
    np.testing.assert_allclose(np.exp(summed), [[0.4, 0.25]], rtol=1e-12)
    averaged = sets.class_scores(logprobs, [[0, 2], [1, 3]], "mean")
    np.testing.assert_allclose(np.exp(averaged), [[np.sqrt(0.03), np.sqrt(0.01)]], rtol=1e-12)
    # A one-word set is that word's log-prob either way.
    np.testing.assert_allclose(sets.class_scores(logprobs, [[0], [1]], "mean"), logprobs[:, :2])


def test_the_prior_from_the_reference_inputs_removes_a_prompts_lean():
    sets = benchmark_module("label_word_sets")
    labels = np.array([0, 1, 0, 1])
    # One prompt that leans to class 1 on every input but ranks the inputs right: raw, it says 1 throughout
    # (accuracy 0.5); its prior, estimated on reference inputs that lean alike, takes the lean away.
    lean = np.log(np.array([[0.3, 0.7], [0.1, 0.9], [0.3, 0.7], [0.1, 0.9]]))
    ensemble, alone = sets.calibrated_accuracies(lean[None], lean[None], labels)
    assert (ensemble, alone) == (1.0, 1.0)
    # With a second prompt that is wrong on every input and surer, the ensemble follows the surer one.
    wrong = np.log(np.array([[0.01, 0.99], [0.99, 0.01], [0.01, 0.99], [0.99, 0.01]]))
    both = np.stack([lean, wrong])
    ensemble, alone = sets.calibrated_accuracies(both, both, labels)
    assert alone == 0.5 and ensemble == 0.0


def test_word_sets_are_parsed_per_class_and_a_wrong_count_exits_with_one_line():
    sets = benchmark_module("label_word_sets")
    assert sets.parse_word_sets(" negative, bad / positive,great ", 2) == [
        ["negative", "bad"],
        ["positive", "great"],
    ]
    with pytest.raises(SystemExit, match="must give 2 word sets"):
        sets.parse_word_sets("negative,bad", 2)
    with pytest.raises(SystemExit, match="must give 2 word sets"):
        sets.parse_word_sets("negative/", 2)


def test_a_runs_own_words_repeat_the_products_ensemble_and_a_set_of_words_is_read_off_one_pass(
    tmp_path, tiny_llama, capsys
):
    """main() on a finished run made by hand (its config, two top prompts, a result): the run's own words give
    the figures the product's evaluation gives for the same prompts, calibrated and ensembled."""
    import json

    from rlprompt.calibration import task_calibration
    from rlprompt.config import load_train_config
    from rlprompt.evaluation import ensemble_result, evaluate_prompts
    from rlprompt.kinds.classification import load
    from rlprompt.models import register_model
    from rlprompt.runs import write_config

    register_model(tiny_llama)
    sets = benchmark_module("label_word_sets")
    overrides = ["model=tiny-llama", "task.seed=16-13", "task.test_examples=120", "seeds=[0]", "methods=[rl]"]
    config = load_train_config(str(ROOT / "configs" / "sst2_compare.yaml"), overrides)
    run = tmp_path / "rl__s0"
    run.mkdir()
    write_config(config, run)
    loaded = load(config)
    prompts = [" it was truly", " the film is"]
    ids = [list(loaded.test_scorer.prompt_ids(p)) for p in prompts]
    top = [{"text": p, "token_ids": i} for p, i in zip(prompts, ids, strict=True)]
    (run / "prompt.json").write_text(json.dumps({"metrics": {"top_k_prompts": top}}))
    (run / "result.json").write_text(json.dumps({"test_metrics": {"accuracy": 0.5}}))

    words = ["negative,bad/positive,great", "negative/positive", "positive/negative"]
    sets.main(["--top", "2", *(arg for w in words for arg in ("--words", w)), str(run)])
    out = capsys.readouterr().out
    figures = {line[:42].strip(): line[42:].split("|") for line in out.splitlines() if line.startswith("  ")}
    pair = "negative,bad/positive,great"
    assert set(figures) == {"own words", f"{pair} (sum)", f"{pair} (mean)", "negative/positive (sum)",
                            "positive/negative (sum)", "the runs' artifacts (result.json)"}  # fmt: skip
    # The run's own words named as a set read the same columns; named the other way round, each class reads
    # the other's word, and the calibrated accuracies mirror around one half.
    assert figures["negative/positive (sum)"] == figures["own words"]
    mirrored = [float(f) for f in figures["positive/negative (sum)"]]
    assert mirrored == pytest.approx([1 - float(f) for f in figures["own words"]], abs=1e-4)

    task, test = loaded.task, loaded.task.examples("test")
    results = evaluate_prompts(loaded.test_scorer, test, prompts, calibration=task_calibration("batch", task))
    ensemble = ensemble_result(results, [ex.label for ex in test]).metrics.accuracy
    alone = np.mean([r.metrics.accuracy for r in results])
    assert float(figures["own words"][0]) == pytest.approx(ensemble, abs=1e-4)
    assert float(figures["own words"][1]) == pytest.approx(alone, abs=1e-4)
