"""Style-transfer reward components on hand-made and human-written sentences (real offline bundles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlprompt.errors import RLPromptError
from rlprompt.perplexity import sentence_perplexities
from rlprompt.style import (
    Rewriter,
    SentenceEncoder,
    StyleObjective,
    StyleReward,
    load_style_task,
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
    (cached,) = (tmp_path / "style").glob("t-*.npz")
    again = train_style_classifier(
        encoder, NEGATIVE * 4, POSITIVE * 4, per_class=6, heldout=3, cache_name="t"
    )
    assert np.array_equal(first.weight, again.weight)
    train_style_classifier(encoder, NEGATIVE * 4, POSITIVE * 4, per_class=5, heldout=3, cache_name="t")
    assert len(list((tmp_path / "style").glob("t-*.npz"))) == 2
    # A damaged cache file (truncated by a kill or a full disk) is trained again, not a traceback
    for damage in (cached.read_bytes()[:100], b""):
        cached.write_bytes(damage)
        retrained = train_style_classifier(
            encoder, NEGATIVE * 4, POSITIVE * 4, per_class=6, heldout=3, cache_name="t"
        )
        np.testing.assert_allclose(retrained.weight, first.weight, rtol=1e-5, atol=1e-6)
        assert cached.stat().st_size > 100, "rewritten"


def test_best_of_takes_each_inputs_best_rewrite(encoder, classifier):
    reward = StyleReward(encoder, classifier, target_style=1)
    scores = reward.scores(NEGATIVE, POSITIVE)
    assert (scores.style > 80).all() and np.allclose(scores.joint, (scores.content + scores.style) / 2)
    copy = reward.scores(NEGATIVE, NEGATIVE)
    assert (copy.content > 99).all() and (copy.style < 20).all()
    samples = [[NEGATIVE[i], POSITIVE[i]] for i in range(3)]  # a copy and a real rewrite for each input
    best = reward.best_of(NEGATIVE, samples)
    # The three calls embed different batches, so their scores agree to float tolerance, not bit for bit.
    assert np.allclose(best, np.maximum(copy.joint, scores.joint), atol=1e-3)
    assert (scores.joint > copy.joint + 1).all(), "the opposite-sentiment rewrite beats the copy"
    assert np.allclose(best, scores.joint, atol=1e-3), "so best-of takes it"


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


def test_rewriter_stops_each_sequence_at_its_closing_quote(smol):
    rewriter = Rewriter(smol, max_new_tokens=40)
    out = rewriter.rewrite("Repeat the sentence:", ["the food was cold ."] * 4, greedy=True)
    assert out[0] == ["The food was cold."], out
    # 4 rows of a short copy and its closing quote: far fewer than 4 x 40 new tokens
    assert rewriter.tokens_generated < 4 * 12, rewriter.tokens_generated


def test_sentence_perplexity_prefers_fluent_text(smol):
    fluent = "the food was great and the staff was friendly ."
    scrambled = "staff the friendly great was . food and was the"
    ppl = sentence_perplexities(smol, [fluent, scrambled, ""])
    assert ppl[0] * 3 < ppl[1] and np.isinf(ppl[2])
    alone = sentence_perplexities(smol, [scrambled])
    assert alone[0] == pytest.approx(ppl[1], rel=1e-3), "batching does not change a sentence's perplexity"


def test_style_tasks_load_their_splits_and_refuse_a_wrong_target():
    yelp = load_style_task("yelp-sentiment", dev_inputs=32)
    assert (
        yelp.direction == "negative → positive"
        and yelp.manual_prompt == "Rewrite the sentence to be positive:"
    )
    assert len(yelp.dev) == 32 and not set(yelp.dev) & set(yelp.train)
    assert len(yelp.test) == len(yelp.references) == 500
    evaluation = set(yelp.test) | set(yelp.references) | set(yelp_sentences("test", 1))
    for used in (yelp.train, yelp.dev, *yelp.classifier_pools):
        assert not evaluation & set(used), "the distributed pool holds the test sentences: they are removed"
    back = load_style_task("yelp-sentiment", target="negative")
    assert back.source == 1 and back.test == yelp_sentences("test", 1)
    shakespeare = load_style_task("shakespeare", seed="100-13")
    assert shakespeare.direction == "shakespearean → modern" and shakespeare.data_seed == "100-13"
    assert len(shakespeare.test) == len(shakespeare.references) == 1462
    assert 95 <= len(shakespeare.train) <= 100 and shakespeare.classifier_heldout is not None
    assert not any(s.startswith('"') and '""' in s for s in shakespeare.test), "CSV quoting is undone"
    assert load_style_task("shakespeare", seed="16-13").data_seed == "100-13"
    with pytest.raises(RLPromptError, match="style.target.*negative and positive.*'modern'"):
        load_style_task("yelp-sentiment", target="modern")
    with pytest.raises(RLPromptError, match="task.seed"):
        load_style_task("shakespeare", seed="100-7")


def test_the_shakespeare_classifier_tells_the_styles_apart(encoder):
    task = load_style_task("shakespeare")
    classifier = task.classifier(encoder)
    assert classifier.train_size == 200 and 190 <= classifier.heldout_size <= 200  # minus test lines
    # 100 sentences per style and MiniLM embeddings: 0.715 measured, far from Yelp's 0.94 (see the README)
    assert classifier.heldout_accuracy > 0.65, classifier.heldout_accuracy


def test_style_objective_rewards_are_z_scored_per_input_and_never_generated_twice(smol):
    task = load_style_task("yelp-sentiment", dev_inputs=2)
    objective = StyleObjective(smol, task, samples=2, max_new_tokens=10, seed=0)
    manual = tuple(smol.encode("Rewrite the sentence to be positive:"))
    prompts = [(), manual, tuple(smol.encode(" great love"))]
    inputs = task.train[:2]
    rewards, joint = objective.train_rewards(prompts, inputs)
    assert rewards.shape == joint.shape == (3,) and rewards.sum() == pytest.approx(0, abs=1e-6)
    assert ((joint >= 0) & (joint <= 1)).all()
    assert objective.stats.pairs_scored == 6
    again = objective.train_rewards(prompts, inputs)
    assert np.array_equal(again[0], rewards) and objective.stats.pairs_scored == 6, "cached"
    # a checkpoint's cache reaches a fresh objective: nothing is generated again
    fresh = StyleObjective(smol, task, samples=2, max_new_tokens=10, seed=0)
    fresh.load_cached_scores(objective.cached_scores())
    assert np.array_equal(fresh.train_rewards(prompts, inputs)[0], rewards) and fresh.stats.pairs_scored == 0
    # ... and goes on counting: new pairs are generated with the next seed and their tokens are added
    tokens = objective.stats.tokens_processed
    assert tokens > 0
    fresh.stats.tokens_processed = tokens  # as the tracker restores it
    fresh.train_rewards(prompts[:1], task.train[2:3])
    objective.train_rewards(prompts[:1], task.train[2:3])
    assert fresh.stats.tokens_processed == objective.stats.tokens_processed > tokens
    # Same seeds, same rewrites, same scores: the keys (prompt, input, decoding) match exactly; the scores
    # come from batches of other compositions in the two objectives, so to float tolerance.
    mine, theirs = fresh.cached_scores(), objective.cached_scores()
    assert mine["calls"] == theirs["calls"]
    assert [key for key, _ in mine["best"]] == [key for key, _ in theirs["best"]]
    np.testing.assert_allclose([v for _, v in mine["best"]], [v for _, v in theirs["best"]], atol=1e-5)


def test_a_style_transfer_run_exports_its_prompt_and_a_test_report(tmp_path, capsys, monkeypatch):
    """The whole driver on a tiny budget: train, choose on dev, rewrite 8 test sentences with the learned,
    empty and manual prompts, and write the report, the rewrites and prompt.json."""
    import csv
    import json

    from rlprompt.config import load_train_config
    from rlprompt.driver import train
    from rlprompt.export import load_prompt
    from rlprompt.models import load_model

    config = load_train_config(None, [
        "task.name=yelp-sentiment", "total_timesteps=16", "evaluations=2", "env.prompt_length=2",
        "env.num_envs=4", "env.examples_per_reward=2", "rl.n_steps=2", "rl.batch_size=8", "rl.n_epochs=1",
        "style.samples=2", "style.eval_samples=2", "style.dev_inputs=4", "style.test_inputs=8",
        "style.max_new_tokens=12",
        "policy.adapter_hidden=32",
    ])  # fmt: skip
    out = train(config, progress=False, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    report = json.loads((run / "style_eval.json").read_text(encoding="utf-8"))
    rows = report["prompts"]
    assert list(rows) == ["human reference", "input copied", "learned", "empty", "manual"]
    assert (
        rows["manual"]["prompt"] == "Rewrite the sentence to be positive:" and rows["empty"]["prompt"] == ""
    )
    for r in rows.values():
        assert set(r) >= {
            "joint",
            "content",
            "style_accuracy",
            "fluency",
            "j_csf",
            "bleu",
            "median_perplexity",
        }
        assert 0 <= r["joint"] <= 100 and 0 <= r["style_accuracy"] <= 100
    assert rows["input copied"]["content"] == pytest.approx(100, abs=1e-3)
    assert rows["input copied"]["style_accuracy"] < rows["human reference"]["style_accuracy"]
    assert rows["human reference"]["bleu"] == pytest.approx(100)
    assert report["meta"]["test_inputs"] == 8 and report["meta"]["style_classifier_heldout_accuracy"] > 0.85
    paired = report["meta"]["paired"]
    assert list(paired) == ["learned - input copied", "learned - empty", "learned - manual"]
    assert paired["learned - manual"]["joint_difference"] == pytest.approx(
        rows["learned"]["joint"] - rows["manual"]["joint"], abs=1e-3
    )
    with (run / "rewrites.tsv").open(encoding="utf-8") as f:
        table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert table[0] == ["input", "human reference", "input copied", "learned", "empty", "manual"]
    assert len(table) == 9 and table[1][0] == table[1][2]
    prompt = load_prompt(run / "prompt.json")
    assert (
        prompt.is_rewriting
        and prompt.template == '{prompt} "{sentence}" "'
        and prompt.task == "yelp-sentiment"
    )
    assert prompt.metrics["test_joint"] == pytest.approx(rows["learned"]["joint"] / 100)  # as dev_joint
    assert prompt.data_seed is None, "yelp-sentiment has no data seed (the few-shot default must not leak in)"
    filled = prompt.fill("the food was cold .")
    assert filled == f'{prompt.text} "the food was cold ." "'
    lm = load_model(config.model, "cpu", "float32")
    assert lm.encode(filled)[: len(prompt.token_ids)] == list(prompt.token_ids), "the learned ids, as tested"
    # The prompt file rewrites new sentences as the run's test did (best of 2 by the reward, its seed): on
    # the test sentences it gives rewrites.tsv's learned column back.
    from rlprompt.style import load_style_task

    inputs = [row[0] for row in table[1:]]
    assert inputs == load_style_task("yelp-sentiment").test[:8]
    assert prompt.metrics["rewriting"] == {"target": "positive", "eval_samples": 2, "top_k": 10,
                                           "max_new_tokens": 12}  # fmt: skip
    assert prompt.rewrite(inputs) == [row[3] for row in table[1:]]
    greedy = prompt.rewrite(inputs[:3], samples=1)
    assert greedy == prompt.rewrite(inputs[:3], samples=1, seed=7) and all(isinstance(r, str) for r in greedy)
    assert prompt.rewrite([]) == []
    # The command line: a line a sentence in, a rewrite a line out, blank lines kept.
    from rlprompt.errors import run_cli
    from rlprompt.rewrite import main as rewrite_main

    # Lines end at line breaks only: a form feed stays in its sentence (str.splitlines would cut there).
    sentences = [f"{inputs[0]}\x0c more", inputs[1]]
    expected = prompt.rewrite(sentences, samples=1)  # (as batched: the same shapes give the same rewrites)
    capsys.readouterr()
    (tmp_path / "in.txt").write_text(f"{sentences[0]}\r\n\r\n  {sentences[1]}\r\n", encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        run_cli(
            rewrite_main, ["--prompt-file", str(run), "--input", str(tmp_path / "in.txt"), "--samples", "1"]
        )
    assert done.value.code == 0
    assert capsys.readouterr().out.split("\n") == [expected[0], "", expected[1], ""]
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "in.txt").read_bytes())))
    with pytest.raises(SystemExit) as done:  # standard input, no progress bar
        run_cli(rewrite_main, ["--prompt-file", str(run), "--samples", "1", "--quiet"])
    printed, err = capsys.readouterr()
    assert done.value.code == 0 and printed.split("\n") == [expected[0], "", expected[1], ""] and not err
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 food .\n")
    in_txt, latin1 = str(tmp_path / "in.txt"), str(tmp_path / "latin1.txt")
    for args, message in [(["--input", latin1], "not UTF-8 text (bad byte at offset 3)"),
                          (["--input", str(tmp_path)], "a directory, not a text file"),
                          (["--samples", "0"], "argument --samples: 1 or more, not 0"),
                          (["--input", in_txt, "--seed", "-1"], "--seed: a whole number")]:  # fmt: skip
        with pytest.raises(SystemExit) as done:
            run_cli(rewrite_main, ["--prompt-file", str(run), *args])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(RLPromptError, match="sentence 2 is empty"):
        prompt.rewrite(["fine .", "  "])
    from rlprompt.style import Rewriter

    def generated(*args, **kwargs):
        raise AssertionError("rewrites were generated before the long sentence was refused")

    with monkeypatch.context() as patched:  # longer than the model reads: said before anything is generated
        patched.setattr(Rewriter, "_generate", generated)
        with pytest.raises(RLPromptError, match="positions"):
            prompt.rewrite(["fine ."] * 70 + ["word " * 9000])
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        run_cli(rewrite_main, ["--prompt-file", str(run), "--input", str(tmp_path / "blank.txt")])
    assert done.value.code == 2 and "no sentences to rewrite" in capsys.readouterr().err
    from rlprompt.evaluate import main as evaluate_main

    with pytest.raises(SystemExit) as done:  # evaluate scores labels: it names the tool that rewrites
        run_cli(evaluate_main, ["--prompt-file", str(run)])
    assert done.value.code == 2 and "python -m rlprompt.rewrite applies it" in capsys.readouterr().err
    del prompt.metrics["rewriting"]  # a file from before the decoding was recorded: target from direction
    assert prompt._style_reward(None).target == 1
    for bad, message in [(lambda: prompt.rewrite("one sentence"), "takes a list of sentences"),
                         (lambda: prompt.rewrite(inputs, samples=0), "samples: a number of rewrites"),
                         (lambda: prompt.classify(inputs), "rewrites; it does not classify")]:  # fmt: skip
        with pytest.raises(RLPromptError, match=message):
            bad()
    result = out["results"][0]
    assert result.metric == "joint" and result.test_score == pytest.approx(rows["learned"]["joint"] / 100)
    summary = (run / "summary.txt").read_text(encoding="utf-8")
    assert "| learned:" in summary and "learned - manual: joint " in summary
    assert not (run / "checkpoint.pt").exists()
