"""The Scorer against plain full forward passes, its caches, multi-token verbalizers and truncation."""

from __future__ import annotations

import numpy as np
import pytest

from rlprompt.backends.hf import Scorer
from rlprompt.errors import RLPromptError
from rlprompt.tasks import Example
from tests.conftest import reference_logprobs

PROMPTS = ["", "It was", "All in all, the movie was really", "Rating:"]
VERBALIZERS = ["terrible", "great"]


def assert_matches_reference(scorer: Scorer, prompts, examples, atol=2e-4):
    got = scorer.score(prompts, examples)
    assert got.shape == (len(prompts), len(examples), scorer.num_classes)
    for pi, prompt in enumerate(prompts):
        ids = scorer.prompt_ids(prompt)
        for ei, ex in enumerate(examples):
            want = reference_logprobs(scorer.encoder, ids, ex)
            np.testing.assert_allclose(
                got[pi, ei], want, atol=atol, err_msg=f"prompt {prompt!r}, example {ex.uid}"
            )
    return got


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_gpt2_eager", "tiny_llama"])
def test_causal_scores_equal_full_forward(model, request, examples):
    lm = request.getfixturevalue(model)
    # Examples of very different lengths in one call: the prefixes are left-padded together.
    scorer = Scorer(lm, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    assert_matches_reference(scorer, PROMPTS, examples)


@pytest.mark.real_model
def test_causal_scores_equal_full_forward_smollm2(smol, examples):
    assert_matches_reference(Scorer(smol, "{sentence} {prompt}", VERBALIZERS), PROMPTS, examples, atol=1e-3)


@pytest.mark.parametrize(
    "template",
    ["{sentence} {prompt} <mask> .", "<mask> {prompt} {sentence}", "{prompt} {sentence} . <mask> !"],
)
def test_masked_scores_equal_full_forward(tiny_bert, examples, template):
    scorer = Scorer(tiny_bert, template, VERBALIZERS, prompt_budget=16)
    assert_matches_reference(scorer, PROMPTS, examples)


@pytest.mark.real_model
def test_masked_scores_equal_full_forward_bert(bert, examples):
    assert_matches_reference(Scorer(bert, "{sentence} {prompt} <mask> .", VERBALIZERS), PROMPTS, examples)


def test_causal_template_with_text_between_prompt_and_label(tiny_llama, examples):
    scorer = Scorer(tiny_llama, 'Review: "{sentence}" {prompt} Answer: <mask>', VERBALIZERS, prompt_budget=16)
    assert_matches_reference(scorer, PROMPTS, examples)


def test_prompt_before_sentence_on_causal(tiny_gpt2, examples):
    # The head is only the literal text before the prompt; the sentence moves into every suffix.
    scorer = Scorer(tiny_gpt2, "Review {prompt} {sentence} Sentiment: <mask>", VERBALIZERS, prompt_budget=16)
    assert_matches_reference(scorer, PROMPTS, examples)


def test_prefix_cache_reuse_and_left_padding(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    together = scorer.score(PROMPTS[:2], examples)
    assert scorer.stats.prefix_misses == len(examples)
    # New prompts on the same examples reuse every cached prefix ...
    later = scorer.score(PROMPTS[2:], examples)
    assert scorer.stats.prefix_misses == len(examples)
    assert scorer.stats.prefix_hits == len(examples)
    # ... and give what one example at a time (no padding at all) gives.
    for ei, ex in enumerate(examples):
        alone = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16).score(PROMPTS, [ex])
        np.testing.assert_allclose(np.concatenate([together, later])[:, ei], alone[:, 0], atol=1e-5)


def test_small_budgets_split_work_but_not_results(tiny_llama, examples):
    big = Scorer(tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16).score(PROMPTS, examples)
    small = Scorer(
        tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16, batch_tokens=24, prefix_group=2,
        prefix_cache_mb=0.001,  # forces evictions
    ).score(PROMPTS, examples)  # fmt: skip
    np.testing.assert_allclose(small, big, atol=1e-5)


def test_multi_token_verbalizers_on_causal(tiny_llama, examples):
    verbalizers = ["terrible", "absolutely wonderful", "okay-ish at best"]
    scorer = Scorer(tiny_llama, "{sentence} {prompt}", verbalizers, prompt_budget=16)
    assert [len(v) for v in scorer.encoder.verbalizer_ids][1:] != [1, 1]
    got = assert_matches_reference(scorer, PROMPTS, examples)
    # A multi-token score is a sum of log-probs: lower than its first token's alone.
    assert np.all(got[:, :, 1] < 0)


@pytest.mark.real_model
def test_multi_token_verbalizers_on_smollm2(smol, examples):
    scorer = Scorer(smol, "{sentence} {prompt}", ["awful", "utterly magnificent"])
    assert len(scorer.encoder.verbalizer_ids[1]) > 1
    assert_matches_reference(scorer, PROMPTS[:2], examples[:3], atol=1e-3)


def test_multi_token_verbalizer_on_masked_is_a_clear_error(tiny_bert):
    with pytest.raises(
        RLPromptError, match=r"'utterly magnificent' is \d tokens for masked model .*single token"
    ):
        Scorer(tiny_bert, "{sentence} {prompt} <mask> .", ["bad", "utterly magnificent"])


def test_reward_cache_never_scores_a_pair_twice(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    first = scorer.score(PROMPTS[:2], examples)
    assert (scorer.stats.pairs_scored, scorer.stats.cache_hits) == (2 * len(examples), 0)
    again = scorer.score(PROMPTS[:2], examples)
    np.testing.assert_array_equal(again, first)
    assert (scorer.stats.pairs_scored, scorer.stats.cache_hits) == (2 * len(examples), 2 * len(examples))
    # An overlapping call only scores the new pairs; a prompt given as ids is the same prompt.
    ids = scorer.prompt_ids(PROMPTS[1])
    mixed = scorer.score([ids, PROMPTS[2]], examples[:3])
    assert scorer.stats.pairs_scored == 2 * len(examples) + 3
    np.testing.assert_array_equal(mixed[0], first[1, :3])
    # Duplicates inside one call are scored once.
    scorer.score([PROMPTS[3], PROMPTS[3]], examples[:1])
    assert scorer.stats.pairs_scored == 2 * len(examples) + 4


def test_the_score_cache_a_checkpoint_keeps_reaches_a_fresh_scorer_whole(tiny_gpt2, examples):
    """A checkpoint keeps the cache as arrays (and still reads one written as (key, scores) pairs): a
    fresh scorer given it scores none of those pairs again, returns the same numbers and keeps the order
    the LRU evicts in."""
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    first = scorer.score(PROMPTS, examples)  # prompts of 0 to 7 tokens, examples of several uids
    saved = scorer.cached_scores()
    assert saved["values"].shape == (len(PROMPTS) * len(examples), 2) and saved["values"].dtype == np.float32
    for form in (saved, list(scorer._scores.items())):
        fresh = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
        fresh.load_cached_scores(form)
        assert list(fresh._scores) == list(scorer._scores)  # the same keys, oldest first
        np.testing.assert_array_equal(fresh.score(PROMPTS, examples), first)
        assert fresh.stats.pairs_scored == 0
    empty = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    empty.load_cached_scores(empty.cached_scores())
    assert len(empty._scores) == 0


def test_long_sentences_are_cut_never_the_prompt_or_label(tiny_gpt2, tiny_bert):
    long_text = " ".join(["wonderful"] * 300)
    ex = Example(uid="long", text=long_text, label=1)
    for lm, template in ((tiny_gpt2, "{sentence} {prompt}"), (tiny_bert, "{sentence} {prompt} <mask> .")):
        scorer = Scorer(lm, template, VERBALIZERS, prompt_budget=8)
        enc = scorer.encoder.encode_example(long_text)
        prompt = scorer.prompt_ids("It was")
        total = len(enc.head) + len(prompt) + len(enc.tail) + (0 if lm.kind == "masked" else 1)
        assert total <= lm.max_length
        assert len(enc.head) + len(enc.tail) > lm.max_length - 8 - 3  # the sentence fills the room left
        if lm.kind == "masked":
            assert enc.tail[-3:] == (lm.mask_token_id, *lm.encode(" ."), *lm.suffix_ids)
        assert_matches_reference(scorer, ["It was"], [ex])


def test_prompt_longer_than_budget_is_a_clear_error(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", VERBALIZERS, prompt_budget=4)
    with pytest.raises(
        RLPromptError, match=r"prompt of \d+ tokens is longer than the 4 tokens the scorer reserves"
    ):
        scorer.score(["All in all, the movie was really"], examples)


def test_causal_prompt_first_starts_from_the_start_token(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{prompt} {sentence}", VERBALIZERS, prompt_budget=8)
    tok = tiny_gpt2.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    assert scorer.encoder.encode_example("fine .").head == (start,)
    assert_matches_reference(scorer, PROMPTS[:2], examples + [Example("blank", "", 0)])


@pytest.mark.parametrize(
    ("model", "template", "verbalizers"),
    [
        ("tiny_gpt2", "{sentence} {prompt}", VERBALIZERS),
        ("tiny_gpt2_eager", "{sentence} {prompt}", VERBALIZERS),
        ("tiny_llama", 'Review: "{sentence}" {prompt} Answer: <mask>', VERBALIZERS),
        ("tiny_llama", "{sentence} {prompt}", ["terrible", "absolutely wonderful", "okay-ish at best"]),
    ],
)
def test_kept_prompt_starts_are_reused_and_change_no_score(model, template, verbalizers, request, examples):
    lm = request.getfixturevalue(model)
    scorer = Scorer(lm, template, verbalizers, prompt_budget=16)
    base = (300, 301, 302, 303, 304)
    # Starts are kept only on examples scored before: the first call keeps none, the second keeps base's.
    assert_matches_reference(scorer, [(500,)], examples)
    assert_matches_reference(scorer, [base], examples)
    assert scorer.stats.prompt_tokens_reused == 0
    # Prompts that start like one already scored compute only what follows the shared start: four, two and
    # none of their tokens come from the kept keys/values, on every example, and the scores do not move.
    variants = [(300, 301, 302, 303, 400), (300, 301, 401, 303, 304), (402, 301, 302, 303, 304)]
    assert_matches_reference(scorer, variants, examples)
    # A pair is one row for all single-token verbalizers and one per multi-token verbalizer; each reuses.
    sizes = [len(ids) for ids in scorer.encoder.verbalizer_ids]
    rows = int(1 in sizes) + sum(n > 1 for n in sizes)
    reused = (4 + 2 + 0) * len(examples) * rows
    assert scorer.stats.prompt_tokens_reused == reused
    # ... and what those prompts scored is kept in turn: the second variant's start serves this one.
    assert_matches_reference(scorer, [(300, 301, 401, 303, 405)], examples)
    assert scorer.stats.prompt_tokens_reused == reused + 4 * len(examples) * rows


def test_kept_prompt_starts_evicted_or_off(tiny_llama, examples):
    prompts = [(300, 301, 302, 303, 304), (300, 301, 302, 303, 400), (300, 301, 401, 303, 304)]
    off = Scorer(tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16, prompt_prefix_cache_mb=0)
    for p in [(500,), *prompts]:
        assert_matches_reference(off, [p], examples)
    assert off.stats.prompt_tokens_reused == 0
    # A store that holds one entry: evictions in the middle of a call never lose a start a row relies on.
    tight = Scorer(tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16,
                   prompt_prefix_cache_mb=1e-6, batch_tokens=24, prefix_group=2)  # fmt: skip
    tight.score([(500,)], examples)
    assert_matches_reference(tight, prompts[:1], examples)
    assert_matches_reference(tight, prompts[1:], examples)
    assert 0 < tight.stats.prompt_tokens_reused < (4 + 2) * len(examples)
    assert len(tight._prompt_kv) == 1


def test_a_model_whose_layers_differ_in_key_value_shape_keeps_no_starts(tiny_llama, examples):
    """Kept starts are stored as one tensor over all layers; a model whose layers' keys and values differ
    in shape (fewer heads in one layer, as some pruned models have) switches them off and scores as before.
    No bundled model has such layers: the forward pass's cache is narrowed here to one."""
    scorer = Scorer(tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    real, seen = scorer._keep_starts, []

    def with_a_narrower_last_layer(segments, cache, suffix_from):
        layers = [(layer[0], layer[1]) for layer in cache]
        k, v = layers[-1]
        seen.append(k.shape[1])
        layers[-1] = (k[:, :1].contiguous(), v[:, :1].contiguous())
        return real(segments, layers, suffix_from)

    scorer._keep_starts = with_a_narrower_last_layer
    prompts = [(500,), (300, 301, 302, 303, 304), (300, 301, 302, 303, 400), (300, 301, 401, 303, 304)]
    for p in prompts:
        assert_matches_reference(scorer, [p], examples)
    assert seen and seen[0] > 1  # the last layer had more than one head before it was narrowed
    assert scorer._prompt_kv.capacity == 0 and len(scorer._prompt_kv) == 0 and not scorer._start_of
    assert scorer.stats.prompt_tokens_reused == 0


def test_kept_prompt_starts_only_on_repeatedly_scored_examples(tiny_llama, examples):
    """A set scored once (a test set) keeps no prompt starts, so it cannot evict the training set's."""
    train, test = examples[:3], [Example(f"t{i}", f"another sentence number {i} .", i % 2) for i in range(6)]
    scorer = Scorer(tiny_llama, "{sentence} {prompt}", VERBALIZERS, prompt_budget=16)
    scorer.score([(500,)], train)
    scorer.score([(300, 301, 302, 303, 304)], train)
    kept = len(scorer._prompt_kv)
    assert kept == len(train)
    scorer.score([(300, 301, 302, 303, 304), (402, 403, 404, 405, 406)], test)
    assert len(scorer._prompt_kv) == kept and scorer.stats.prompt_tokens_reused == 0
    # ... and scored again, the test set is repeated too: its starts are kept from then on.
    scorer.score([(402, 403, 404, 405, 407)], test)
    assert len(scorer._prompt_kv) == kept + len(test) and scorer.stats.prompt_tokens_reused == 0
    assert_matches_reference(scorer, [(300, 301, 302, 303, 400)], train)
    assert scorer.stats.prompt_tokens_reused == 4 * len(train)
