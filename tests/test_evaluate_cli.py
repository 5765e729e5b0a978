"""``python -m rlprompt.evaluate``: output, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlprompt.errors import run_cli
from rlprompt.evaluate import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.real_model
def test_json_output_on_a_masked_model(capsys):
    argv = ["--model", "bert-tiny-splade", "--task", "sst-2", "--prompt", "It was", "--prompt", ""]
    code, out, _ = run(argv + ["--limit", "40", "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert payload["model_kind"] == "masked" and payload["split"] == "test"
    assert [r["prompt"] for r in payload["results"]] == ["It was", ""]
    for r in payload["results"]:
        assert r["n"] == 40 and 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert set(r["per_class_accuracy"]) == {"terrible", "great"}


@pytest.mark.real_model
def test_table_output_on_a_causal_model_with_a_user_task(tmp_path, capsys):
    (tmp_path / "d.tsv").write_text("text\ty\na joy to watch .\tpos\na dull mess .\tneg\n", encoding="utf-8")
    spec = "test: d.tsv\ntext_column: text\nlabel_column: y\nverbalizers: {neg: terrible, pos: great}\n"
    (tmp_path / "t.yaml").write_text(spec, encoding="utf-8")
    code, out, _ = run(
        ["--model", "smollm2-135m", "--task", str(tmp_path / "t.yaml"), "--prompt", "It was"], capsys
    )
    assert code == 0
    assert "t test (2 examples) on smollm2-135m (causal LM, cpu, float32)" in out
    assert "'It was'" in out and "macro-F1" in out


def test_batch_calibration_on_a_task_of_test_examples_only_says_what_it_needs(tmp_path, capsys):
    (tmp_path / "d.tsv").write_text("text\ty\na joy to watch .\tpos\na dull mess .\tneg\n", encoding="utf-8")
    spec = "test: d.tsv\ntext_column: text\nlabel_column: y\nverbalizers: {neg: terrible, pos: great}\n"
    (tmp_path / "t.yaml").write_text(spec, encoding="utf-8")
    argv = ["--model", "bert-tiny-splade", "--task", str(tmp_path / "t.yaml"), "--prompt", "It was"]
    code, _, err = run([*argv, "--calibration", "batch"], capsys)
    assert (
        code == 2
        and "calibration 'batch' estimates the label prior from the task's unlabelled training" in err
    )
    (tmp_path / "t.yaml").write_text(spec + "dev: d.tsv\n", encoding="utf-8")  # dev inputs are enough
    code, out, _ = run([*argv, "--calibration", "batch"], capsys)
    assert code == 0 and "'It was'" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "sst2"], "error: unknown task 'sst2'"),
        (["--task", ""], "error: --task is empty: name one, or leave --task out for the default"),
        (["--model", " "], "error: --model is empty"),
        (["--task", "yelp-sentiment"], "error: 'yelp-sentiment' is a style task, not a classification one"),
        (["--model", "gpt-17"], "error: unknown model 'gpt-17'"),
        (
            ["--template", "{sentence} <mask>", "--model", "bert-tiny-splade"],
            r"must contain \{prompt\} exactly once",
        ),
        (
            ["--template", "{sentence} {prompt} <mask> .", "--model", "smollm2-135m"],
            "<mask> must end the template",
        ),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--task", "missing.yaml"], "missing.yaml: file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    code, out, err = run(argv + ["--prompt", "x"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_multi_token_verbalizer_on_masked_model_exits_2(tmp_path, capsys):
    (tmp_path / "d.tsv").write_text("sentence\tlabel\nfine .\t0\n", encoding="utf-8")
    (tmp_path / "t.yaml").write_text(
        "test: d.tsv\nverbalizers: {0: utterly magnificent, 1: bad}\n", encoding="utf-8"
    )
    code, _, err = run(["--model", "bert-tiny-splade", "--task", str(tmp_path / "t.yaml")], capsys)
    assert code == 2 and "must be a single token" in err


def test_real_command_line_exit_codes(tmp_path):
    """The module runs as a program: an error is one line on stderr and exit status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "rlprompt.evaluate", "--task", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: unknown task 'nope'; built-in tasks are sst-2, mr, cr, sst-5, agnews (and, to train, "
        "the style kind's yelp-sentiment, shakespeare), or give a task YAML file"
    )
    done = subprocess.run(
        [sys.executable, "-m", "rlprompt.evaluate", "--split", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr
