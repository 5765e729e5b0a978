"""The look-back scripts' shared figures (benchmarks/finished_runs.py) and benchmarks/prompt_pool.py's rules,
on label scores built by hand, so each rule's choice is known in advance."""

from __future__ import annotations

import ast

import numpy as np

from tests.conftest import benchmark_module


def _scores(predicted: list[int], confidence: float = 0.9) -> np.ndarray:
    """(examples, 2) log-probs that put ``confidence`` on each predicted class."""
    probs = np.full((len(predicted), 2), 1 - confidence)
    probs[np.arange(len(predicted)), predicted] = confidence
    return np.log(probs)


def test_agreement_is_the_share_of_inputs_on_the_consensus_label():
    runs = benchmark_module("finished_runs")
    # Three prompts on four inputs: the consensus (majority here) is [0, 1, 1, 0].
    scores = [_scores([0, 1, 1, 0]), _scores([0, 1, 1, 1]), _scores([1, 1, 1, 0])]
    assert runs.agreement(scores).tolist() == [1.0, 0.75, 0.75]
    labels = np.array([0, 1, 0, 0])
    assert runs.accuracy(scores[0], labels) == 0.75
    assert runs.ensemble_accuracy(scores, labels, [0, 1, 2]) == 0.75  # the consensus, wrong on input 2
    assert runs.ensemble_accuracy(scores, labels, [1]) == 0.5
    # Forward selection takes the prompt that is right most surely, then what the ensemble gains most by.
    assert runs.forward(scores, labels, 1) == [0]


def test_prompt_pool_reads_saved_scores_and_each_rule_picks_what_it_should(tmp_path, capsys):
    pool = benchmark_module("prompt_pool")
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, 2, 32), "dev": rng.integers(0, 2, 32), "test": rng.integers(0, 2, 400)}

    def prompt(error_rate: float, seed: int) -> dict:
        """Label scores that are wrong on a seeded ``error_rate`` of each split's inputs."""
        flip = np.random.default_rng(seed)
        return {
            split: _scores(np.where(flip.random(len(y)) < error_rate, 1 - y, y).tolist())
            for split, y in labels.items()
        }

    # Six good prompts that err on different inputs, and two that are wrong on most of them.
    prompts = [prompt(0.15, seed) for seed in range(6)] + [prompt(0.7, 10), prompt(0.8, 11)]
    saved = tmp_path / "pool.npz"
    scores = {split: [p[split] for p in prompts] for split in labels}
    texts = [f"p{i}" for i in range(len(prompts))]
    benchmark_module("finished_runs").save_scores(saved, texts, scores, labels)
    pool.main([str(saved)])
    out = capsys.readouterr().out
    figures = {line[:22].strip(): float(line[22:29]) for line in out.splitlines()[1:6]}
    # The consensus of mostly good prompts is better than any one of them (each about 0.85); the two bad
    # prompts agree with it least, so agreement keeps them out without reading a label.
    assert figures["top 5 by agreement"] > 0.95 and figures["all"] > 0.9
    (agreed,) = [line for line in out.splitlines() if line.startswith("top 5 by agreement")]
    assert min(ast.literal_eval(agreed.split("members' test")[1].strip())) > 0.8
    assert "members' test" in out and "chosen on 200 test sentences" in out
    # The product's combination (mean log-probs) is the figure the "first 5 by dev" line gives.
    (combined,) = [line for line in out.splitlines() if line.startswith("first 5 by dev, combined by")]
    assert f"log-probs {figures['first 5 by dev']:.3f}" in combined


def test_how_the_ensemble_combines_its_members_changes_what_a_sure_wrong_prompt_can_do():
    pool = benchmark_module("prompt_pool")
    labels = {"train": np.array([0, 1]), "dev": np.array([0, 1]), "test": np.array([0, 1, 0, 1])}

    def prompt(train: float, dev: float, test: float, right: bool = True) -> dict:
        """A prompt sure to ``train``, ``dev`` and ``test`` of the right label (or, ``right=False``, of the
        wrong one on test) on every input of that split."""
        sure = {"train": train, "dev": dev, "test": test}
        return {
            s: _scores((y if right or s != "test" else 1 - y).tolist(), sure[s]) for s, y in labels.items()
        }

    # Two prompts mildly right on test (margins 0.41 and 0.62) and one wrong and surer (margin 2.2): the vote
    # follows the two, the mean log-probs (and probabilities) the sure one. Its margins on the reference
    # inputs are large (6.9 and 0, root mean square 4.9; the others' 0.41 and 2.2, 1.58), so scaled by their
    # size it weighs 0.45 against the others' 0.26 + 0.39, and the two outvote it again.
    prompts = [prompt(0.6, 0.9, 0.6), prompt(0.6, 0.9, 0.65), prompt(0.999, 0.5, 0.9, right=False)]
    scores = {split: [p[split] for p in prompts] for split in labels}
    figures = pool.combinations(scores, labels, [0, 1, 2])
    # Each prompt's training inputs are balanced and its scores on them symmetric: no bias to fit.
    assert figures == {
        "log-probs": 0.0, "probabilities": 0.0, "vote": 1.0, "scaled margins": 1.0, "labelled bias": 0.0
    }  # fmt: skip
    # A prompt as sure on every reference input (margins 6.9 throughout: no spread, a size of 6.9) weighs
    # 1.0 scaled, against the mild ones' 0.88 + 1.10 (test margins 1.39 and 1.73 over their size 1.58).
    prompts = [prompt(0.6, 0.9, 0.8), prompt(0.6, 0.9, 0.85), prompt(0.999, 0.999, 0.999, right=False)]
    scores = {split: [p[split] for p in prompts] for split in labels}
    figures = pool.combinations(scores, labels, [0, 1, 2])
    assert (figures["log-probs"], figures["vote"], figures["scaled margins"]) == (0.0, 1.0, 1.0)


def test_the_labelled_bias_takes_away_a_lean_that_the_labels_show():
    pool = benchmark_module("prompt_pool")
    labels = np.array([0, 0, 1, 1])
    leaning = np.log(np.array([[0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]]))  # says 1 throughout
    bias = pool.labelled_bias(leaning, labels)
    assert bias[0] > bias[1] and abs(bias.sum()) < 1e-9
    assert (pool.normalised(leaning + bias).argmax(-1) == labels).all()


def test_per_input_choice_takes_the_prompts_right_near_each_input():
    """benchmarks/input_dependent.py's local rules: three prompts right on one cluster of inputs and wrong on
    the other, three the reverse; for each test input both rules follow the prompts right near it, where the
    six together tie."""
    local = benchmark_module("input_dependent")
    cluster = np.array([0] * 8 + [1] * 8)  # reference inputs: 8 near cluster 0, 8 near cluster 1
    ref_labels = np.array([0, 1] * 8)
    test_cluster, test_labels = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])

    def prompt(right_on: int, where, labels) -> np.ndarray:
        return _scores(np.where(where == right_on, labels, 1 - labels).tolist())

    ref = np.stack([prompt(c, cluster, ref_labels) for c in (0, 0, 0, 1, 1, 1)])
    test = np.stack([prompt(c, test_cluster, test_labels) for c in (0, 0, 0, 1, 1, 1)])
    similarity = (test_cluster[:, None] == cluster[None]).astype(float)  # near its own cluster only
    top5, weighted = local.local_rules(test, ref, ref_labels, similarity, k=8)
    assert top5.tolist() == test_labels.tolist()
    assert weighted.tolist() == test_labels.tolist()
    margins = test[..., 1] - test[..., 0]
    assert np.allclose(margins.mean(0), 0)  # every prompt at once cannot tell
    # With the neighbours reversed, each input follows the prompts wrong on it.
    top5, weighted = local.local_rules(test, ref, ref_labels, 1 - similarity, k=8)
    assert top5.tolist() == (1 - test_labels).tolist()
    assert weighted.tolist() == (1 - test_labels).tolist()


def test_fitted_weights_follow_the_one_prompt_that_reads_the_labels():
    """benchmarks/input_dependent.py's stacking rule: of five prompts, four lean to the wrong label with
    large margins and one reads the label with small ones; the mean margin is misled, the fitted weights
    are not."""
    local = benchmark_module("input_dependent")
    rng = np.random.default_rng(0)

    def margins(labels):
        signed = 2 * labels - 1
        noise = rng.normal(0, 0.2, (len(labels), 5))
        wrong = -3 * signed[:, None] + rng.normal(0, 3, (len(labels), 4))  # large, and against the label
        return np.concatenate([0.5 * signed[:, None], wrong], 1) + noise

    ref_labels, test_labels = np.array([0, 1] * 16), np.array([1, 0] * 50)
    ref, test = margins(ref_labels), margins(test_labels)
    assert ((test.mean(1) > 0) == test_labels).mean() < 0.2  # the plain ensemble is misled
    for penalty in (1.0, 0.01):
        predictions = local.fitted_weights(ref, ref_labels, test, penalty)
        assert (predictions == test_labels).mean() > 0.95
    # The weights come from the reference labels: flipped, they flip every prediction.
    flipped = local.fitted_weights(ref, 1 - ref_labels, test, 1.0)
    assert (flipped == test_labels).mean() < 0.05


def test_per_prompt_label_words_take_the_pair_that_reads_the_labels():
    """benchmarks/prompt_verbalizers.py: a pair's columns come out of the all-words scores in class order, and
    the choice goes to the pair with the best accuracy, then the best log-likelihood of the right label."""
    local = benchmark_module("prompt_verbalizers")
    words = ["bad", "great", "negative", "positive"]
    labels = np.array([0, 1, 1, 0])
    always_great = _scores([1, 1, 1, 1])  # bad/great: "great" for every input
    right_unsure = _scores([0, 1, 1, 0], 0.6)  # negative/positive: right, unsure
    logprobs = np.concatenate([always_great, right_unsure], -1)[None]  # (1 prompt, 4 inputs, 4 words)
    pairs = {
        p: local.pair_scores(logprobs, words, p)[0] for p in ("bad/great", "negative/positive", "great/bad")
    }
    assert pairs["great/bad"].argmax(-1).tolist() == [0, 0, 0, 0]  # the columns follow the pair's order
    assert local.choose(pairs, labels) == "negative/positive"
    sure = {"unsure": _scores([0, 1, 1, 0], 0.6), "sure": _scores([0, 1, 1, 0], 0.9)}  # the same accuracy
    assert local.choose(sure, labels) == "sure"
