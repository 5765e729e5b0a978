"""Style-transfer reward components on hand-made and human-written sentences (real offline bundles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlprompt.errors import RLPromptError
from rlprompt.style import (
    Rewriter,
    SentenceEncoder,
    StyleReward,
    train_style_classifier,
    yelp_sentences,
    yelp_style_classifier,
)

pytestmark = pytest.mark.real_model

NEGATIVE = ["the food was cold and the staff was rude .", "worst service i have ever had .",
            "the room was dirty and smelled bad ."]  # fmt: skip
POSITIVE = ["the food was hot and the staff was friendly .", "best service i have ever had .",
            "the room was clean and smelled great ."]  # fmt: skip


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture(scope="module")
def classifier(encoder):
    return yelp_style_classifier(encoder)


def test_the_style_classifier_is_accurate_on_its_heldout_split(classifier):
    assert classifier.heldout_accuracy > 0.85
    assert classifier.train_size == 10_000 and classifier.heldout_size == 1_000


def test_a_copy_keeps_the_content_and_does_not_change_the_style(encoder, classifier):
    content = encoder.similarity(NEGATIVE, NEGATIVE)
    assert np.allclose(content, 1.0, atol=1e-5)
    unrelated = encoder.similarity(NEGATIVE, ["the museum opens at nine on sundays ."] * 3)
    assert (unrelated < 0.3).all()
    assert (classifier.probability(encoder, NEGATIVE) < 0.2).all(), (
        "a copy of a negative input is not positive"
    )


def test_an_opposite_sentiment_rewrite_scores_high_style_and_keeps_content(encoder, classifier):
    assert (classifier.probability(encoder, POSITIVE) > 0.8).all()
    content = encoder.similarity(NEGATIVE, POSITIVE)
    assert (content > 0.5).all(), content  # the same topic, only the sentiment words changed


def test_human_rewrites_move_the_style_towards_the_target(encoder, classifier):
    """On the 500 + 500 Yelp test sentences: the human rewrite is far more often in the target style
    than the input it rewrites (the references into positive are often merely neutral)."""
    for source in (0, 1):
        inputs, refs = yelp_sentences("test", source), yelp_sentences("ref", source)
        target = 1 - source
        in_target = [np.mean((classifier.probability(encoder, s) >= 0.5) == target) for s in (refs, inputs)]
        assert in_target[0] > in_target[1] + 0.4, in_target


def test_the_classifier_is_cached_and_keyed_by_its_data(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path))
    first = train_style_classifier(
        encoder, NEGATIVE * 4, POSITIVE * 4, per_class=6, heldout=3, cache_name="t"
    )
    assert len(list((tmp_path / "style").glob("t-*.npz"))) == 1
    again = train_style_classifier(
        encoder, NEGATIVE * 4, POSITIVE * 4, per_class=6, heldout=3, cache_name="t"
    )
    assert np.array_equal(first.weight, again.weight)
    train_style_classifier(encoder, NEGATIVE * 4, POSITIVE * 4, per_class=5, heldout=3, cache_name="t")
    assert len(list((tmp_path / "style").glob("t-*.npz"))) == 2


def test_best_of_takes_each_inputs_best_rewrite(encoder, classifier):
    reward = StyleReward(encoder, classifier, target_style=1)
    scores = reward.scores(NEGATIVE, POSITIVE)
    assert (scores.style > 80).all() and np.allclose(scores.joint, (scores.content + scores.style) / 2)
    copy = reward.scores(NEGATIVE, NEGATIVE)
    assert (copy.content > 99).all() and (copy.style < 20).all()
    samples = [[NEGATIVE[i], POSITIVE[i]] for i in range(3)]  # a copy and a real rewrite for each input
    best = reward.best_of(NEGATIVE, samples)
    assert np.allclose(best, np.maximum(copy.joint, scores.joint))
    assert (best == scores.joint).all(), "the opposite-sentiment rewrite beats the copy"


def test_rewriter_samples_reproducibly_and_cuts_at_the_closing_quote(smol):
    rewriter = Rewriter(smol, max_new_tokens=12)
    inputs = ["the food was cold .", "the staff was rude ."]
    state = torch.get_rng_state()
    first = rewriter.rewrite("Rewrite the sentence to be positive:", inputs, samples=3, seed=1)
    assert torch.equal(state, torch.get_rng_state()), "the caller's random state is left alone"
    assert [len(s) for s in first] == [3, 3]
    assert all('"' not in r and "\n" not in r for rs in first for r in rs)
    assert first == rewriter.rewrite("Rewrite the sentence to be positive:", inputs, samples=3, seed=1)
    greedy = rewriter.rewrite("Rewrite the sentence to be positive:", inputs, greedy=True)
    assert [len(s) for s in greedy] == [1, 1] and all(g[0] for g in greedy)


def test_rewriter_needs_a_causal_model(bert):
    with pytest.raises(RLPromptError, match="needs a causal"):
        Rewriter(bert)
