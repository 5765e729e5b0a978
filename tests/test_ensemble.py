"""An ensemble of prompts as a run's artifact (``ensemble: k``): the k best prompts by dev, each input's
label the argmax of their mean calibrated label log-probabilities, in the headline figures, ``prompt.json``,
``rlprompt.evaluate`` and ``rlprompt.transfer``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlprompt.calibration import task_calibration
from rlprompt.errors import run_cli
from rlprompt.evaluate import main as evaluate_main
from rlprompt.evaluation import evaluate_prompts, make_scorer
from rlprompt.methods import MethodResult
from rlprompt.models import register_model
from rlprompt.tasks import load_task
from tests.conftest import train_cli, write_task
from tests.test_methods import ROWS

# 40 sentences: enough that a single prompt's figures and the ensemble's rarely coincide
SENTENCES = [(f"{lead} {sentence}", label) for lead in ("", "honestly ,", "in short ,", "well ,", "so")
             for sentence, label in ROWS]  # fmt: skip


@pytest.fixture
def tiny_task(tmp_path):
    write_task(tmp_path, "tiny", [(s.strip(), y) for s, y in SENTENCES])
    return tmp_path


def _ensemble_accuracy(results, labels) -> float:
    """Each input's class: the argmax of the prompts' mean log-softmax of their calibrated scores."""
    mean = np.mean([r.scores - np.log(np.exp(r.scores).sum(-1, keepdims=True)) for r in results], axis=0)
    return float(np.mean(mean.argmax(-1) == labels))


@pytest.mark.parametrize("method", ["rl", "search"])
def test_an_ensemble_run_reports_exports_and_evaluates_the_top_prompts_as_one(
    method, tiny_task, capsys, tiny_gpt2
):  # fmt: skip
    register_model(tiny_gpt2)
    # the chosen prompt, the ensemble's first, by dev accuracy (rl's own rule is the next test's)
    settings = ["env.num_envs=4", "rl.batch_size=20", "policy.adapter_hidden=16",
                "rl.prompt_rule=dev_accuracy"] if method == "rl" else ["search.population=8"]  # fmt: skip
    run_dir, _ = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", f"method={method}", "ensemble=3", "total_timesteps=80",
        "evaluations=4", "env.prompt_length=3", "vocab.size=50", *settings,
    )  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    top = exported["metrics"]["top_k_prompts"]
    result = MethodResult.load(run_dir / "result.json")
    # The ensemble is the run's 3 best prompts by dev, the chosen one first
    assert [m["token_ids"] for m in exported["ensemble"]] == [p["token_ids"] for p in top]
    assert exported["token_ids"] == top[0]["token_ids"] and len({tuple(p["token_ids"]) for p in top}) == 3
    assert exported["metrics"]["chosen_dev_accuracy"] == top[0]["dev"]
    # Its dev and test figures, computed here from each prompt's own scores
    task = load_task(str(tiny_task / "task.yaml"))
    scorer = make_scorer(tiny_gpt2, task, prompt_budget=8)  # the sentences are short: none is cut
    batch = task_calibration("batch", task)
    prompts = [tuple(p["token_ids"]) for p in top]
    for split, figure in (("dev", result.dev_score), ("test", result.test_score)):
        examples = task.examples(split)
        scored = evaluate_prompts(scorer, examples, prompts, calibration=batch)
        ensemble = _ensemble_accuracy(scored, np.array([ex.label for ex in examples]))
        assert figure == pytest.approx(ensemble)
    assert ensemble != pytest.approx(scored[0].metrics.accuracy)  # (else the test could not tell them apart)
    assert result.dev_score == exported["metrics"]["dev_accuracy"]
    metrics = exported["metrics"]
    assert result.test_score == metrics["test_accuracy"] == metrics["test_ensemble_top_3"]
    assert result.learned == " + ".join(repr(p["text"]) for p in top)
    assert result.test_chosen == top[0]["test"]
    # The report's headline is the ensemble's; its top-k table gives the best prompt's own figure
    from rlprompt.comparison import write_report

    report = write_report([run_dir], tiny_task / "report")
    assert "this table's first column its chosen prompt's alone" in report
    chosen_row = next(
        line for line in report.splitlines() if line.startswith(f"| {method} | ") and line.count("|") == 5
    )  # the top-k table's row
    assert chosen_row.split("|")[2].strip() == f"{top[0]['test']:.3f}"
    # rlprompt.evaluate scores the file as what it is: its 3 prompts and their ensemble
    path = str(run_dir / "prompt.json")
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", path, "--json"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert done.value.code == 0 and [r["prompt_ids"] for r in rows[:3]] == [p["token_ids"] for p in top]
    assert rows[3]["prompt"] == f"ensemble of 3 prompts ({path})" and len(rows) == 4
    assert rows[3]["accuracy"] == pytest.approx(result.test_score)
    # --top-k 1: the chosen prompt alone
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", path, "--top-k", "1", "--json"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert done.value.code == 0 and [r["prompt_ids"] for r in rows] == [top[0]["token_ids"]]


def test_transfer_scores_an_ensemble_file_as_one_row(tiny_task, capsys, tiny_gpt2):
    from rlprompt.transfer import run_transfer

    register_model(tiny_gpt2)
    run_dir, _ = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", "method=search", "ensemble=3", "total_timesteps=60",
        "evaluations=3", "env.prompt_length=3", "vocab.size=50", "search.population=8",
    )  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    result = run_transfer([run_dir / "prompt.json"], ["tiny-gpt2"], [str(tiny_task / "task.yaml")],
                          progress=False)  # fmt: skip
    row = result["rows"][0]
    assert row["name"].endswith("ensemble of 3)")
    assert row["text"] == " + ".join(m["text"].strip() for m in exported["ensemble"])
    # on its own model and template, the ensemble's figure is the run's
    cell = next(iter(row["cells"].values()))
    assert cell["calibrated"] == pytest.approx(exported["metrics"]["test_accuracy"])
    assert cell["accuracy"] == pytest.approx(exported["metrics"]["test_accuracy_raw"])
    assert cell["calibrated"] != pytest.approx(exported["metrics"]["top_k_prompts"][0]["test"])
    assert len(result["rows"]) == 3  # the ensemble, the manual prompt, the empty prompt


def test_chosen_prompt_by_dev_reward_among_the_top_3():
    from rlprompt.methods.base import Candidate, TopCandidates, chosen_prompt

    top = TopCandidates(4)
    top.add([Candidate((1,), "a", 0.75, 0.10, 0), Candidate((2,), "b", 0.70, 0.30, 0),
             Candidate((3,), "c", 0.70, 0.30, 1), Candidate((4,), "d", 0.65, 0.90, 2),
             Candidate((5,), "e", 0.60, 0.95, 2)])  # fmt: skip
    best = top.items[0]
    assert [c.text for c in top.items] == ["a", "b", "c", "d"]  # "e" is not among the 4 best by dev
    assert chosen_prompt("dev_accuracy", top, best) is best
    # of the first 3 ("d", 4th, is kept for the report only), the highest dev reward; of two that tie,
    # the first by dev (accuracy, then kept order)
    assert chosen_prompt("top_3_dev_reward", top, best).text == "b"
    assert chosen_prompt("top_3_dev_reward", TopCandidates(3), best) is best  # nothing kept: the best


@pytest.mark.parametrize("method,ensemble", [("rl", 1), ("search", 2)])
def test_prompt_rule_top_3_dev_reward_exports_the_top_prompt_with_the_highest_dev_reward(
    method, ensemble, tiny_task, capsys, tiny_gpt2
):  # fmt: skip
    register_model(tiny_gpt2)
    # rl's default rule; search's is dev accuracy
    settings = ["env.num_envs=4", "rl.batch_size=20", "policy.adapter_hidden=16"] if method == "rl" else [
        "search.population=8", "search.prompt_rule=top_3_dev_reward"]  # fmt: skip
    run_dir, _ = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", f"method={method}", "top_k_report=4", f"ensemble={ensemble}",
        "total_timesteps=80", "evaluations=4", "env.prompt_length=3", "vocab.size=50", *settings,
    )  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    top = exported["metrics"]["top_k_prompts"]
    assert len(top) == 4 and [p["dev"] for p in top] == sorted((p["dev"] for p in top), reverse=True)
    chosen = max(top[:3], key=lambda p: p["dev_reward"])
    assert chosen is not top[0]  # (else this run could not tell the two rules apart)
    second = next(p for p in top if p is not chosen)
    result = MethodResult.load(run_dir / "result.json")
    assert exported["token_ids"] == chosen["token_ids"]
    if ensemble == 1:  # the chosen prompt alone is the artifact: its dev and test figures are the run's
        assert not exported["ensemble"] and result.learned == chosen["text"]
        assert result.dev_score == exported["metrics"]["dev_accuracy"] == chosen["dev"]
        assert result.test_score == pytest.approx(chosen["test"])
    else:  # the ensemble's first member; the next best by dev joins it
        assert [m["token_ids"] for m in exported["ensemble"]] == [chosen["token_ids"], second["token_ids"]]
        assert exported["metrics"]["chosen_dev_accuracy"] == chosen["dev"]
        assert result.test_chosen == chosen["test"]
        assert result.learned == f"{chosen['text']!r} + {second['text']!r}"
    # rlprompt.evaluate --top-k: the chosen prompt first, then the next best by dev
    path = str(run_dir / "prompt.json")
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", path, "--top-k", "2", "--json"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert done.value.code == 0
    assert [r["prompt_ids"] for r in rows] == [chosen["token_ids"], second["token_ids"]]


def test_polishing_starts_from_the_prompt_the_rule_chooses(tiny_task, capsys, tiny_gpt2, monkeypatch):
    """rl.polish_rounds edits the prompt rl.prompt_rule would export (here not the first by dev), not the
    first by dev: the run of the test above, its polishing recorded (and made to accept nothing, so the
    kept prompts stay those it chose among)."""
    import rlprompt.methods.rl as rl

    register_model(tiny_gpt2)
    starts = []
    monkeypatch.setattr(rl, "polish_prompt", lambda model, reward, start, *rest: starts.append(start) or [])
    run_dir, _ = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", "method=rl", "top_k_report=4", "ensemble=1",
        "total_timesteps=80", "evaluations=4", "env.prompt_length=3", "vocab.size=50", "env.num_envs=4",
        "rl.batch_size=20", "policy.adapter_hidden=16", "rl.polish_rounds=1",
    )  # fmt: skip
    top = json.loads((run_dir / "prompt.json").read_text())["metrics"]["top_k_prompts"]
    chosen = max(top[:3], key=lambda p: p["dev_reward"])
    assert chosen is not top[0]
    assert [list(s) for s in starts] == [chosen["token_ids"]]  # the task and the policy share a tokenizer
