"""The comparison report, built from small fixture runs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rlprompt.comparison import collect, report_markdown
from rlprompt.errors import run_cli
from rlprompt.methods import MethodResult
from rlprompt.report import main as report_main


def _scores(accuracy: float, raw: float | None = None, calibrated: float | None = None) -> dict:
    both = {} if raw is None else {"accuracy_raw": raw, "accuracy_calibrated": calibrated}
    return {"accuracy": accuracy, "macro_f1": 0.7, **both}


BASE = MethodResult(
    method="rl", seed=0, model="m", task="sst-2", dev_score=0.7, test_metrics=_scores(0.7),
    steps=100, train_seconds=10.0, lm_tokens=1000, trainable_params=500, artifact="prompt.json",
    artifact_bytes=2048, learned="great movie", interpretable=True, transferable=True,
    curve=[{"step": 0, "lm_tokens": 10, "dev_score": 0.5, "best_dev_score": 0.5},
           {"step": 100, "lm_tokens": 1000, "dev_score": 0.7, "best_dev_score": 0.7}],
)  # fmt: skip


def _write(root, results):
    for r in results:
        run_dir = root / f"{r.method}__s{r.seed}"
        run_dir.mkdir(parents=True)
        r.save(run_dir)


def test_report_table_aggregates_over_seeds(tmp_path):
    results = [
        replace(BASE, seed=0, test_metrics=_scores(0.70)),
        replace(BASE, seed=1, test_metrics=_scores(0.80), learned="bad | film"),
        replace(BASE, method="lora", seed=0, test_metrics=_scores(0.6), interpretable=False,
                transferable=False, trainable_params=2_000_000, artifact_bytes=3 * 2**20,
                perplexity_before=10.0, perplexity_after=12.5),
        replace(BASE, method="manual", seed=0, test_metrics=_scores(0.5), curve=BASE.curve[:1],
                trainable_params=0),
    ]  # fmt: skip
    _write(tmp_path / "cmp", results)
    loaded = collect([tmp_path / "cmp"])
    assert sorted((r.method, r.seed) for r in loaded) == [("lora", 0), ("manual", 0), ("rl", 0), ("rl", 1)]
    text = report_markdown(loaded)
    table = text.split("## Per seed")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "0.750 ± 0.071" in rows["rl"]  # mean and sample std of 0.70 and 0.80
    assert "| 2 |" in rows["rl"] and "none (model unchanged)" in rows["rl"]
    assert "10.0 → 12.5" in rows["lora"] and "2.0M" in rows["lora"] and "3.0 MB" in rows["lora"]
    assert rows["lora"].rstrip().endswith("| no | no |")
    assert text.index("| rl |") < text.index("| lora |") < text.index("| manual |")
    assert "bad \\| film" in text  # a learned prompt cannot break the table
    assert "Interrupted before the end of training" not in text
    # a run stopped early is marked where it is averaged, and named under the table
    text = report_markdown([replace(r, interrupted=(r.method, r.seed) == ("rl", 1)) for r in loaded])
    table = text.split("## Per seed")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 2 (1 interrupted) |" in rows["rl"] and "| 1 |" in rows["lora"]
    assert "counted above with the prompt or checkpoint kept so far: rl seed 1 (" in table


def test_report_cli_writes_markdown_and_plot(tmp_path, capsys):
    _write(tmp_path / "a", [BASE])
    _write(tmp_path / "b", [replace(BASE, method="soft_prompt", interpretable=False, transferable=False)])
    with pytest.raises(SystemExit) as done:
        run_cli(report_main, [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    assert done.value.code == 0
    assert "| soft_prompt |" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()


def test_a_run_under_two_of_the_directories_given_counts_once(tmp_path, capsys):
    _write(tmp_path / "cmp", [BASE, replace(BASE, seed=1, test_metrics=_scores(0.8))])
    loaded = collect([tmp_path / "cmp", tmp_path / "cmp" / "rl__s0", tmp_path / "cmp" / "." / "rl__s1"])
    assert sorted(r.seed for r in loaded) == [0, 1]
    err = capsys.readouterr().err
    assert err.count("under more than one of the directories given; counted once") == 2, err


REPORT_ERRORS = ["missing", "a file", "empty", "broken", "not an object", "no method", "out is a file",
                 "out under a file"]  # fmt: skip


@pytest.mark.parametrize("setup", REPORT_ERRORS)
def test_report_errors_name_the_directory(tmp_path, capsys, setup):
    target, argv = tmp_path / "run", []
    if setup == "a file":
        target.write_text("x", encoding="utf-8")
    elif setup != "missing":
        target.mkdir()
    if setup == "broken":
        (target / "result.json").write_text("{not json", encoding="utf-8")
    if setup == "not an object":
        (target / "result.json").write_text("[1, 2]", encoding="utf-8")
    if setup == "no method":  # a field every result has, missing: named, not the constructor's complaint
        (target / "result.json").write_text('{"seed": 0}', encoding="utf-8")
    if setup == "out is a file":
        _write(target, [BASE])
        (tmp_path / "out").write_text("keep", encoding="utf-8")
        argv, target = ["--out", str(tmp_path / "out")], tmp_path / "out"  # the file is what is named
    if setup == "out under a file":
        _write(target, [BASE])
        (tmp_path / "out").write_text("keep", encoding="utf-8")
        argv, target = ["--out", str(tmp_path / "out" / "report")], tmp_path / "out" / "report"
    with pytest.raises(SystemExit) as done:
        run_cli(report_main, [str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and str(target) in err, err
    if setup == "no method":
        assert "not a valid result file (no 'method' field)" in err, err


def test_report_shows_raw_and_calibrated_accuracy_and_the_reference_rows(tmp_path):
    import json

    from rlprompt.comparison import collect_references
    from rlprompt.methods import REFERENCES

    results = [
        replace(BASE, seed=0, test_metrics=_scores(0.70, 0.70, 0.74),
                calibrated_with="batch"),
        replace(BASE, seed=1, test_metrics=_scores(0.80, 0.80, 0.78),
                calibrated_with="batch"),
    ]  # fmt: skip
    _write(tmp_path / "cmp", results)
    rows = [("manual prompt", "It was", 0.51, 0.697), ("empty prompt", "", 0.515, 0.705)]
    keys = ("name", "prompt", "test_accuracy_raw", "test_accuracy_calibrated")
    references = {"calibrated_with": "batch", "rows": [dict(zip(keys, row, strict=True)) for row in rows]}
    (tmp_path / "cmp" / REFERENCES).write_text(json.dumps(references), encoding="utf-8")
    text = report_markdown(collect([tmp_path / "cmp"]), collect_references([tmp_path / "cmp"]))
    table = text.split("## Per seed")[0]
    assert "test accuracy calibrated (batch)" in table
    rl = next(line for line in table.splitlines() if line.startswith("| rl |"))
    assert "| none | 0.750 ± 0.071 | 0.760 ± 0.028 |" in rl  # how it chose, raw, calibrated
    assert "| manual prompt `'It was'` (reference) | — | 0.510 | 0.697 |" in table
    assert "| empty prompt `''` (reference) | — | 0.515 | 0.705 |" in table
    assert "| rl | 1 | 0.700 | 0.800 | 0.780 |" in text.split("## Per seed")[1]


def _correct(right: int, n: int = 10) -> str:
    return "1" * right + "0" * (n - right)


def test_paired_differences_pair_runs_by_split_and_seed_and_give_the_test_sample_error(tmp_path):
    import numpy as np

    from rlprompt.comparison import paired_differences, report_json

    rl = [replace(BASE, data_seed=d, seed=s, test_correct=c, test_metrics=_scores(c.count("1") / 10))
          for d, s, c in (("16-13", 0, _correct(8)), ("16-21", 0, "0111111110"))]  # fmt: skip
    lora = [replace(BASE, method="lora", data_seed=d, seed=s, test_correct=c)
            for d, s, c in (("16-13", 0, _correct(6)), ("16-21", 0, _correct(9)),
                            ("16-42", 0, _correct(5)))]  # a run rl does not have: not paired  # fmt: skip
    manual = [replace(BASE, method="manual", data_seed="16-13", seed=0, test_correct=None)]  # an old run
    (paired,) = paired_differences([*rl, *lora, *manual])
    assert paired["method"] == "lora" and paired["runs"] == 2 and paired["baseline_ahead"] == 1
    d1 = np.array([0] * 6 + [1, 1, 0, 0], float)  # 16-13: rl right on examples 6 and 7 where lora is not
    d2 = np.array([-1] + [0] * 9, float)  # 16-21: rl wrong on example 0 where lora is right
    assert paired["difference"] == pytest.approx((d1.mean() + d2.mean()) / 2)
    # Both runs score the same 10 test examples: the error is over examples, of their run-averaged difference.
    assert paired["standard_error"] == pytest.approx(((d1 + d2) / 2).std(ddof=1) / np.sqrt(10))
    assert paired["std_over_runs"] == pytest.approx(np.std([d1.mean(), d2.mean()], ddof=1))
    numbers = report_json([*rl, *lora])
    assert numbers["data_seeds"] == ["16-13", "16-21", "16-42"]
    assert numbers["methods"]["rl"]["test"]["mean"] == pytest.approx(0.8)
    assert [r["data_seed"] for r in numbers["methods"]["lora"]["runs"]] == ["16-13", "16-21", "16-42"]
    assert numbers["paired_differences"]["against"][0]["method"] == "lora"


def test_a_report_over_data_splits_averages_the_references_and_names_each_runs_split(tmp_path):
    import json

    from rlprompt.comparison import write_report
    from rlprompt.methods import REFERENCES

    for split, acc, manual in (("16-13", 0.7, 0.6), ("16-21", 0.8, 0.7)):
        _write(tmp_path / f"split-{split}", [replace(BASE, data_seed=split, test_metrics=_scores(acc),
                                                     test_correct=_correct(int(acc * 10)))])  # fmt: skip
        _write(tmp_path / f"split-{split}", [replace(BASE, method="manual", data_seed=split,
                                                     test_metrics=_scores(manual),
                                                     test_correct=_correct(int(manual * 10)))])  # fmt: skip
        rows = [{"name": "manual prompt", "prompt": "It was", "test_accuracy_raw": manual,
                 "test_accuracy_calibrated": manual + 0.05}]  # fmt: skip
        (tmp_path / f"split-{split}" / REFERENCES).write_text(json.dumps({"calibrated_with": "batch",
                                                                         "rows": rows}))  # fmt: skip
    text = write_report([tmp_path], tmp_path)
    assert "| manual prompt `'It was'` (reference) | — | 0.650 ± 0.071 | 0.700 ± 0.071 |" in text
    assert "2 data splits (16-13, 16-21)" in text
    assert "| rl | 16-13 | 0 |" in text and "| rl | 16-21 | 0 |" in text
    assert "| manual | 2 | +0.100 |" in text  # rl − manual on both splits
    numbers = json.loads((tmp_path / "report.json").read_text())
    assert numbers["methods"]["manual"]["test"]["mean"] == pytest.approx(0.65)
    assert numbers["references"][0]["test_calibrated"]["mean"] == pytest.approx(0.70)


def test_results_written_before_they_named_their_split_get_it_from_their_config(tmp_path):
    import json

    from rlprompt.comparison import report_json

    old = replace(BASE, test_correct=None)  # a result.json of an earlier version: no data_seed
    _write(tmp_path / "cmp", [old])
    (tmp_path / "cmp" / "rl__s0" / "config.yaml").write_text("task:\n  name: sst-2\n  seed: 16-42\n")
    (loaded,) = collect([tmp_path / "cmp"])
    assert loaded.data_seed == "16-42"
    numbers = report_json([replace(loaded, test_metrics=_scores(float("nan")))])
    assert numbers["methods"]["rl"]["runs"][0]["test"] != numbers["methods"]["rl"]["runs"][0]["test"]
    from rlprompt.comparison import _finite

    assert (
        json.loads(json.dumps(_finite(numbers), allow_nan=False))["methods"]["rl"]["runs"][0]["test"] is None
    )


def test_the_top_k_table_gives_the_ensemble_beside_the_mean_when_every_run_has_one():
    from rlprompt.comparison import report_json

    runs = [replace(BASE, seed=s, test_metrics=_scores(a), test_top_k=m, top_k=3, test_ensemble=e)
            for s, a, m, e in ((0, 0.70, 0.68, 0.74), (1, 0.80, 0.76, 0.82))]  # fmt: skip
    text = report_markdown(runs)
    section = text.split("## The chosen prompt and the top-3 mean")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| rl"))
    assert "top-3 ensemble" in section
    assert row.split("|")[2:5] == [" 0.750 ± 0.071 ", " 0.720 ± 0.057 ", " 0.780 ± 0.057 "]
    assert report_json(runs)["methods"]["rl"]["test_ensemble"]["mean"] == pytest.approx(0.78)
    # A run without the figure (an older result.json): no column rather than a blank one
    text = report_markdown([runs[0], replace(runs[1], test_ensemble=None)])
    assert "ensemble" not in text.split("## The chosen prompt and the top-3 mean")[1].split("##")[0]


def test_runs_that_kept_five_prompts_report_rlprompts_top_3_mean_beside_the_top_5_mean():
    from rlprompt.comparison import report_json

    runs = [replace(BASE, seed=s, test_metrics=_scores(a), top_k=5, test_top_k=m5, test_top_3=m3,
                    test_ensemble=e)
            for s, a, m3, m5, e in ((0, 0.70, 0.72, 0.68, 0.74), (1, 0.80, 0.78, 0.76, 0.82))]  # fmt: skip
    section = report_markdown(runs).split("## The chosen prompt and the top-3 mean")[1].split("##")[0]
    header = next(line for line in section.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.split("|")[2:6]] == [
        "chosen prompt, test accuracy", "top-3 mean, test accuracy", "top-5 mean, test accuracy",
        "top-5 ensemble, test accuracy"]  # fmt: skip
    row = next(line for line in section.splitlines() if line.startswith("| rl"))
    assert row.split("|")[2:6] == [" 0.750 ± 0.071 ", " 0.750 ± 0.042 ", " 0.720 ± 0.057 ", " 0.780 ± 0.057 "]
    numbers = report_json(runs)["methods"]["rl"]
    assert numbers["test_top_3"]["mean"] == pytest.approx(0.75)
    assert [r["test_top_3"] for r in numbers["runs"]] == [0.72, 0.78]
    # An older result.json (no test_top_3): its top-k mean is the top-3 mean only when it kept 3 or fewer
    old = [replace(r, test_top_3=None) for r in runs]
    assert "top-3 mean" not in report_markdown(old)
    kept_3 = report_json([replace(r, top_k=3) for r in old])["methods"]["rl"]
    assert kept_3["test_top_3"]["mean"] == pytest.approx(0.72)


def test_results_written_before_the_top_3_mean_get_it_from_their_prompt_file(tmp_path):
    import json

    kept_5 = replace(BASE, top_k=5, test_top_k=0.70, test_top_3=None)  # an earlier result.json
    _write(tmp_path / "cmp", [kept_5, replace(kept_5, seed=1)])
    top = [
        {"text": str(i), "token_ids": [i], "dev": 0.8, "test": t} for i, t in enumerate((0.9, 0.8, 0.7, 0.6))
    ]
    prompt = {"text": "0", "metrics": {"top_k_prompts": top}}
    (tmp_path / "cmp" / "rl__s0" / "prompt.json").write_text(json.dumps(prompt))
    with_file, without = sorted(collect([tmp_path / "cmp"]), key=lambda r: r.seed)
    assert with_file.test_top_3 == pytest.approx(0.8) and without.test_top_3 is None


def test_two_parts_of_one_grid_show_their_shared_references_once_and_different_ones_apart(tmp_path):
    import json

    from rlprompt.comparison import write_report
    from rlprompt.methods import REFERENCES

    def part(name: str, seed: int, manual_calibrated: float):
        _write(tmp_path / name, [replace(BASE, seed=seed, test_correct=_correct(7))])
        rows = [{"name": "manual prompt", "prompt": "News:", "test_accuracy_raw": 0.646,
                 "test_accuracy_calibrated": manual_calibrated}]  # fmt: skip
        (tmp_path / name / REFERENCES).write_text(json.dumps({"calibrated_with": "batch", "rows": rows}))

    part("seed0", 0, 0.705)
    part("seeds12", 1, 0.705)  # seeds run later on the same setup: the same reference figures
    part("other", 2, 0.600)  # another setup's references stay a row of their own
    text = write_report([tmp_path / "seed0", tmp_path / "seeds12"], tmp_path / "out")
    assert text.count("manual prompt `'News:'` (reference)") == 1
    numbers = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(numbers["references"]) == 1
    assert [run["seed"] for run in numbers["methods"]["rl"]["runs"]] == [0, 1]  # both parts' runs
    text = write_report([tmp_path / "seed0", tmp_path / "other"], tmp_path / "out2")
    assert text.count("manual prompt `'News:'` (reference)") == 2


def test_a_report_over_runs_of_two_tasks_is_refused(tmp_path):
    """A row averages a method's runs as seeds: a style run's joint and a classification run's accuracy
    came out as one rl row."""
    from rlprompt.comparison import write_report
    from rlprompt.errors import RLPromptError

    _write(tmp_path / "a", [BASE])
    _write(tmp_path / "b", [replace(BASE, task="yelp-sentiment", metric="joint")])
    with pytest.raises(RLPromptError, match=r"the runs are on 2 tasks \(sst-2, yelp-sentiment\)"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
