"""benchmarks/tune_baselines.py: the baselines' sweep on development splits runs each value for real,
chooses by mean test accuracy there, and keeps finished runs when started again."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlprompt.models import register_model
from tests.conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


def _lora_sweep(tmp_path, out, factors: list[str], steps: int) -> list[str]:
    """Arguments for a sweep of LoRA's learning rate on tiny-llama, split 16-13, 16 test examples."""
    # The learning rate is set here, so the config's own (the sweep's result) can change.
    settings = ["model=tiny-llama", "lora.learning_rate=1e-3", f"lora.steps={steps}", "lora.batch_size=8",
                "evaluations=1", "task.test_examples=16", "heldout_sentences=4",
                f"output_dir={tmp_path / 'runs'}"]  # fmt: skip
    return ["--config", str(ROOT / "configs" / "sst2_compare.yaml"), "--methods", "lora",
            "--factors", *factors, "--splits", "16-13", "--out", str(out),
            *(arg for setting in settings for arg in ("--set", setting))]  # fmt: skip


def test_a_tie_keeps_the_config_value_and_the_best_test_wins():
    choose = benchmark_module("tune_baselines").choose
    rows = [{"value": 0.01, "test": 0.7}, {"value": 0.03, "test": 0.8}, {"value": 0.1, "test": 0.8}]
    assert choose(rows, current=0.1) == 0.1
    assert choose(rows, current=0.01) == 0.03  # a tie between two others: the smaller
    assert choose([{"value": 0.01, "test": 0.9}] + rows[1:], current=0.1) == 0.01


def test_the_sweep_runs_each_value_and_resumes(tmp_path, tiny_llama, capsys):
    register_model(tiny_llama)
    tune = benchmark_module("tune_baselines")
    out = tmp_path / "tune"
    argv = _lora_sweep(tmp_path, out, factors=["0.1", "1"], steps=2)
    assert tune.main(argv) == 0
    table = json.loads((out / "tune.json").read_text())["methods"]["lora"]
    assert table["setting"] == "learning_rate" and table["config_value"] == 1e-3
    assert [row["value"] for row in table["rows"]] == [1e-4, 1e-3]
    for row in table["rows"]:
        (run,) = row["runs"]
        run_dir = out / "split-16-13" / tune.run_name("lora", row["value"], 0)
        result = json.loads((run_dir / "result.json").read_text())
        assert run["test"] == result["test_metrics"]["accuracy"] and result["data_seed"] == "16-13"
        assert result["steps"] == 2 and result["method"] == "lora"
    assert table["chosen"] == tune.choose(table["rows"], 1e-3)
    assert "| lora | learning_rate | 0.001 |" in (out / "tune.md").read_text()
    # Started again, it trains nothing: every run had finished.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    capsys.readouterr()
    assert tune.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps
    assert json.loads((out / "tune.json").read_text())["methods"]["lora"] == table
    # A run that was stopped before it finished (result.json says interrupted) is run again, alone.
    stopped = out / "split-16-13" / tune.run_name("lora", 1e-4, 0) / "result.json"
    stopped.write_text(json.dumps({**json.loads(stopped.read_text()), "interrupted": True}))
    assert tune.main(argv) == 0
    again = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert [p for p in again if again[p] != stamps[p]] == [stopped]
    assert not json.loads(stopped.read_text()).get("interrupted")


def test_a_method_without_a_swept_setting_is_refused(tmp_path, capsys):
    assert benchmark_module("tune_baselines").main(["--methods", "manual", "--out", str(tmp_path)]) == 2
    assert "--methods: no swept setting for manual" in capsys.readouterr().err


def test_a_value_whose_run_fails_is_listed_and_never_chosen(tmp_path, tiny_llama, capsys):
    register_model(tiny_llama)
    tune = benchmark_module("tune_baselines")
    out = tmp_path / "tune"
    # A learning rate of 1e6 sends the LoRA weights past float range: the NaN guard stops that run.
    argv = _lora_sweep(tmp_path, out, factors=["1", "1e9"], steps=4)
    assert tune.main(argv) == 0
    table = json.loads((out / "tune.json").read_text())["methods"]["lora"]
    good, bad = table["rows"]
    assert bad["value"] == 1e6 and "not finite" in bad["runs"][0]["failed"]
    assert table["chosen"] == 1e-3 and not math.isnan(good["test"])
    assert "failed" in capsys.readouterr().out
