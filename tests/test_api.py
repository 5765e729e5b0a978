"""The Python entry point (rlprompt.learn), the runnable example, and the task shorthand in configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

import rlprompt
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.models import register_model
from rlprompt.train import main as train_main
from tests.conftest import write_task

ROOT = Path(__file__).resolve().parents[1]
ROWS = [("a joy to watch .", 1), ("a dull , lifeless mess .", 0), ("warm and funny .", 1), ("tedious .", 0)]
TINY = {"env.num_envs": 4, "env.examples_per_reward": 4, "rl.batch_size": 20, "vocab.size": 30,
        "policy.adapter_hidden": 16, "evaluations": 2}  # fmt: skip


def test_learn_from_in_memory_examples_writes_them_into_the_run(tiny_gpt2, tmp_path):
    register_model(tiny_gpt2)
    examples = {
        split: [(text, "pos" if y else "neg") for text, y in ROWS] for split in ("train", "dev", "test")
    }
    prompt = rlprompt.learn(
        model="tiny-gpt2", examples=examples, verbalizers={"neg": "terrible", "pos": "great"},
        total_timesteps=80, overrides=TINY, run_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    assert isinstance(prompt, rlprompt.export.LearnedPrompt) and prompt.run_dir == tmp_path / "run"
    assert prompt.verbalizers == ["terrible", "great"] and 0 <= prompt.metrics["test_accuracy"] <= 1
    assert (
        prompt.result.steps == 80 and prompt.text == rlprompt.load_prompt(prompt.run_dir / "prompt.json").text
    )
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["task"]["name"] == str(tmp_path / "run" / "task" / "task.yaml"), "--resume finds the data"
    assert (tmp_path / "run" / "task" / "test.jsonl").read_text().count("\n") == len(ROWS)


def test_learn_raises_the_project_s_own_errors(capsys):
    with pytest.raises(RLPromptError) as raised:
        rlprompt.learn(model="gpt-17", progress=False)
    with pytest.raises(SystemExit):
        run_cli(train_main, ["--set", "model=gpt-17"])
    assert f"error: {raised.value}" == capsys.readouterr().err.strip(), "the message the command prints"
    with pytest.raises(RLPromptError, match="method 'lora' does not write one"):
        rlprompt.learn(method="lora")
    with pytest.raises(RLPromptError, match="examples need verbalizers"):
        rlprompt.learn(examples={"train": [("x", 1)]})


def test_a_run_config_may_name_its_task_file_directly(tiny_gpt2, tmp_path, capsys):
    register_model(tiny_gpt2)
    task = write_task(tmp_path, "short", ROWS)
    config = tmp_path / "run.yaml"
    config.write_text(f"model: tiny-gpt2\ntask: {task}\ntotal_timesteps: 40\n", encoding="utf-8")
    argv = ["--quiet", "--config", str(config), "--run-dir", str(tmp_path / "run"),
            *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    assert rlprompt.load_prompt(tmp_path / "run" / "prompt.json").task == "short"


def test_the_example_runs_end_to_end(tiny_gpt2, tmp_path, capsys):
    """The example script, on a tiny model and task (the offline default takes about three minutes)."""
    register_model(tiny_gpt2)
    spec = importlib.util.spec_from_file_location("learn_a_prompt", ROOT / "examples" / "learn_a_prompt.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    task = write_task(tmp_path, "short", ROWS)
    prompt = example.main(
        [
            "--model",
            "tiny-gpt2",
            "--task",
            str(task),
            "--steps",
            "40",
            "--run-dir",
            str(tmp_path / "run"),
            *[a for k, v in TINY.items() if k != "evaluations" for a in ("--set", f"{k}={v}")],
        ]
    )
    out = capsys.readouterr().out
    assert f"learned prompt {prompt.text!r}" in out and "batch-calibrated" in out


def test_learn_keeps_strings_as_given_and_leaves_nothing_behind_when_it_fails(tiny_gpt2, tmp_path):
    """Python strings reach the config as those strings (not YAML: 'Yes' is no boolean, '#1' no comment);
    a failed call leaves no run directory, and an existing run is never written over."""
    register_model(tiny_gpt2)
    examples = {split: ROWS for split in ("train", "dev", "test")}
    words = {0: "terrible", 1: "great"}
    prompt = rlprompt.learn(
        model="tiny-gpt2",
        method="manual",
        examples=examples,
        verbalizers=words,
        manual_prompt="#1 movie: Yes",
        run_dir=tmp_path / "run",
        progress=False,
    )
    assert prompt.text == "#1 movie: Yes"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["manual_prompt"] == "#1 movie: Yes"
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(RLPromptError, match="exists and is not empty"):
        rlprompt.learn(
            model="tiny-gpt2",
            method="manual",
            examples=examples,
            verbalizers=words,
            run_dir=tmp_path / "run",
            progress=False,
        )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    out = tmp_path / "runs"
    with pytest.raises(RLPromptError, match="label"):  # label 1 has no word: the task is refused
        rlprompt.learn(
            model="tiny-gpt2",
            method="manual",
            examples=examples,
            verbalizers={0: "terrible"},
            output_dir=str(out),
            progress=False,
        )
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(RLPromptError, match="method 'lora' does not write one"):
        rlprompt.learn(overrides={"method": "lora"}, progress=False)  # not hidden by a default of rl
    with pytest.raises(RLPromptError, match="verbalizers must map each label value to its label word"):
        rlprompt.learn(examples=examples, verbalizers=["terrible", "great"], output_dir=str(out))
    with pytest.raises(RLPromptError, match="no 'test' split"):
        rlprompt.learn(examples={"train": ROWS, "dev": ROWS}, verbalizers=words, output_dir=str(out))
    with pytest.raises(RLPromptError, match=r"examples\['train'\]\[1\]: the text must be a string, got None"):
        rlprompt.learn(
            examples={**examples, "train": [ROWS[0], (None, 1)]}, verbalizers=words, output_dir=str(out)
        )
    with pytest.raises(RLPromptError, match="give a label value twice"):
        rlprompt.learn(examples=examples, verbalizers={**words, "1": "good"})
    with pytest.raises(RLPromptError, match="give a label value twice"):  # as task files compare labels
        rlprompt.learn(examples=examples, verbalizers={True: "yes", "true": "no"})
    with pytest.raises(RLPromptError, match=r"examples\['dev'\] must be a list"):
        rlprompt.learn(
            examples={"train": ROWS, "dev": None, "test": ROWS}, verbalizers=words, output_dir=str(out)
        )


def test_a_prompt_s_token_ids_are_used_only_on_the_directory_it_was_learned_on(
    tiny_gpt2, tiny_bert, tmp_path, monkeypatch
):
    """A local model is recorded by its absolute path: the same relative name elsewhere is another model,
    which gets the prompt's text, not ids from a foreign tokenizer."""
    for where, lm in (("here", tiny_gpt2), ("there", tiny_bert)):
        lm.model.save_pretrained(tmp_path / where / "m")
        lm.tokenizer.save_pretrained(tmp_path / where / "m")
    monkeypatch.chdir(tmp_path / "here")
    examples = {split: ROWS for split in ("train", "dev", "test")}
    prompt = rlprompt.learn(
        model="m",
        method="manual",
        examples=examples,
        verbalizers={0: "bad", 1: "good"},
        manual_prompt="It was",
        run_dir=tmp_path / "run",
        progress=False,
    )
    assert prompt.model == str(tmp_path / "here" / "m")
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"] == str(tmp_path / "here" / "m"), "a resume from elsewhere loads this model"
    assert prompt.prompt_for("m") == tuple(prompt.token_ids)
    assert prompt.prompt_for(str(tmp_path / "here" / "m")) == tuple(prompt.token_ids)
    monkeypatch.chdir(tmp_path / "there")
    assert prompt.prompt_for("m") == "It was"
    assert prompt.members_for("m") == ["It was"]
    assert rlprompt.export.recorded_model_name("smollm2-135m") == "smollm2-135m"
