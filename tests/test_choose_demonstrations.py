"""benchmarks/choose_demonstrations.py: which candidate sets it scores (one training example per class, in
every order, or a seeded sample of them), and that the config it writes puts the best-ranked set before the
template, leaves it out of training and scores what the script printed for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlprompt.models import register_model
from rlprompt.tasks import Example
from tests.conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


def _train(per_class: list[int]) -> list[Example]:
    return [Example(uid=f"c{c}/{i}", text=f"sentence {c} {i}", label=c)
            for c, n in enumerate(per_class) for i in range(n)]  # fmt: skip


def test_every_ordered_set_of_one_example_per_class_when_they_fit():
    choose = benchmark_module("choose_demonstrations")
    sets = choose.candidate_sets(_train([2, 3]), 2, max_sets=12)
    # 2 x 3 choices of one per class, each in both orders
    assert len(sets) == 12 and len({tuple(ex.uid for ex in s) for s in sets}) == 12
    assert all(sorted(ex.label for ex in s) == [0, 1] for s in sets)
    assert {tuple(ex.label for ex in s) for s in sets} == {(0, 1), (1, 0)}


def test_a_seeded_sample_of_distinct_sets_when_there_are_more():
    choose = benchmark_module("choose_demonstrations")
    train = _train([4, 4, 4])  # 64 choices x 6 orders = 384 sets
    sets = choose.candidate_sets(train, 3, max_sets=50, seed=3)
    uids = [tuple(ex.uid for ex in s) for s in sets]
    assert len(uids) == 50 and len(set(uids)) == 50
    assert all(sorted(ex.label for ex in s) == [0, 1, 2] for s in sets)
    assert len({tuple(ex.label for ex in s) for s in sets}) > 1  # more than one class order
    assert uids == [tuple(ex.uid for ex in s) for s in choose.candidate_sets(train, 3, 50, seed=3)]
    assert uids != [tuple(ex.uid for ex in s) for s in choose.candidate_sets(train, 3, 50, seed=4)]
    with pytest.raises(ValueError, match="no training example of class 2"):
        choose.candidate_sets(_train([2, 2]), 3, max_sets=10)


def test_the_written_config_holds_the_best_set_and_scores_what_was_printed(tmp_path, tiny_llama, capsys):
    register_model(tiny_llama)
    choose = benchmark_module("choose_demonstrations")
    out = tmp_path / "demos.yaml"
    argv = ["--config", str(ROOT / "configs" / "sst2_compare.yaml"), "--split", "16-13", "--max-sets", "3",
            "--set", "model=tiny-llama", "--out", str(out)]  # fmt: skip
    assert choose.main(argv) == 0
    ranked = [line for line in capsys.readouterr().out.splitlines() if line.startswith("loglik")]
    assert len(ranked) == 3

    from rlprompt.config import load_train_config
    from rlprompt.kinds.classification import load

    # The same three sets, ranked here: each row's template shows its set's sentences in order.
    loaded = load(
        load_train_config(
            str(ROOT / "configs" / "sst2_compare.yaml"), ["task.seed=16-13", "model=tiny-llama"]
        )
    )
    config, task, lm = loaded.config, loaded.task, loaded.lm
    sets = choose.candidate_sets(task.training_examples(), 2, max_sets=3, seed=config.seed)
    rows = choose.rank_sets(config, task, lm, sets)
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    for loglik, accuracy, shown, written in rows:
        positions = [written.template.index(ex.text) for ex in shown]
        assert positions == sorted(positions) and np.isfinite(loglik) and 0 <= accuracy <= 1
    best = rows[0]
    assert ranked[0] == f"loglik {best[0]:.3f}  accuracy {best[1]:.3f}  {[ex.uid for ex in best[2]]}"

    # The written config: based on the given one, with the --set overrides the set was chosen under (the
    # model here), the best set's template and its examples out of training; the manual prompt under it
    # scores the best set's figures.
    assert "--set model=tiny-llama" in out.read_text().splitlines()[0]
    again = load(load_train_config(str(out))).config
    assert again.model == "tiny-llama" and again.dtype == config.dtype
    assert again.task.seed == "16-13" and again.ensemble == config.ensemble
    assert again.task.template == best[3].template
    assert sorted(again.task.exclude_train) == sorted(ex.uid for ex in best[2])
    assert len(task.training_examples(again.task.exclude_train)) == 30
    loglik, accuracy = choose.manual_prompt_score(
        again, task, lm, again.task.template, again.task.exclude_train
    )
    assert loglik == pytest.approx(best[0], abs=1e-5) and accuracy == best[1]


def test_the_split_is_not_a_set_override_and_a_whole_task_section_is_refused(tmp_path, capsys):
    """The written config repeats the --set overrides, so two that it could not repeat stop before any
    scoring: the split given twice (--split and task.seed), and task=NAME, which replaces the whole task
    section on the command line but would be merged with the base's in a file."""
    choose = benchmark_module("choose_demonstrations")
    out = tmp_path / "demos.yaml"
    with pytest.raises(SystemExit) as stopped:
        choose.main(["--split", "16-13", "--set", "task.seed=16-21", "--out", str(out)])
    assert stopped.value.code == 2 and "the data split is --split" in capsys.readouterr().err

    from rlprompt.errors import RLPromptError

    with pytest.raises(RLPromptError, match="set task.name=mr"):
        choose.main(["--split", "16-13", "--set", "task=mr", "--out", str(out)])
    assert not out.exists()
