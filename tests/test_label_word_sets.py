"""benchmarks/label_word_sets.py: class scores from word sets, and the batch-calibrated figures it prints,
on log-probs built by hand so each figure is known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module


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
