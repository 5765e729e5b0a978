"""Transfer suite (``pytest -m transfer``): learn a prompt on one tiny model, export it, evaluate it on a
causal and a masked target, and check the whole pipeline (formats, templates, mask placement, matrix)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from rlprompt.errors import run_cli
from rlprompt.export import load_prompt, save_prompt
from rlprompt.models import register_model
from rlprompt.train import main as train_main
from rlprompt.transfer import main as transfer_main

pytestmark = pytest.mark.transfer

ROWS = [("a joy to watch .", 1), ("a dull , lifeless mess .", 0), ("warm and funny .", 1), ("tedious .", 0)]


@pytest.fixture
def learned_prompt(tiny_gpt2, tiny_bert, tmp_path, capsys):
    register_model(tiny_gpt2)
    register_model(tiny_bert)
    lines = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in ROWS)
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text(lines, encoding="utf-8")
    spec = "name: tiny\ntrain: train.tsv\ndev: dev.tsv\ntest: test.tsv\nverbalizers: {0: bad, 1: good}\n"
    (tmp_path / "task.yaml").write_text(spec, encoding="utf-8")
    argv = ["--quiet", "--set", "model=tiny-gpt2", "--set", f"task.name={tmp_path / 'task.yaml'}",
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", "total_timesteps=40",
            "--set", "evaluations=4",
            "--set", "env.num_envs=4", "--set", "env.examples_per_reward=4", "--set", "rl.batch_size=20",
            "--set", "vocab.size=30", "--set", "policy.adapter_hidden=16"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir / "prompt.json"


def test_transfer_to_a_causal_and_a_masked_model(learned_prompt, tmp_path, capsys):
    out_dir = tmp_path / "transfer"
    argv = ["--prompts", str(learned_prompt), "--models", "tiny-gpt2,tiny-bert", "--output-dir", str(out_dir),
            "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    result = json.loads((out_dir / "transfer.json").read_text())
    assert result["targets"] == ["tiny/tiny-gpt2", "tiny/tiny-bert"]
    # Each target uses the template of its own kind; the masked one puts the mask after the prompt.
    assert result["templates"] == {
        "tiny/tiny-gpt2": "{sentence} {prompt} <mask>",
        "tiny/tiny-bert": "{sentence} {prompt} <mask> .",
    }
    rows = result["rows"]
    assert [r["kind"] for r in rows] == ["learned", "manual", "empty"]  # the matrix: 3 rows x 2 targets
    for row in rows:
        assert set(row["cells"]) == set(result["targets"])
        for cell in row["cells"].values():
            assert 0 <= cell["accuracy"] <= 1
    # The gain is over the manual prompt on the same target.
    for target in result["targets"]:
        manual = rows[1]["cells"][target]["accuracy"]
        assert rows[0]["cells"][target]["gain"] == pytest.approx(
            rows[0]["cells"][target]["accuracy"] - manual
        )
    # On its own model the prompt scores what training reported on test.
    prompt = load_prompt(learned_prompt)
    cell = rows[0]["cells"]["tiny/tiny-gpt2"]
    assert cell["accuracy"] == pytest.approx(prompt.metrics["test_accuracy_raw"])
    assert cell["calibrated"] == pytest.approx(prompt.metrics["test_accuracy_calibrated"])
    assert prompt.calibration == "batch" and result["calibration"] == "batch"
    assert result["round_trip"][rows[0]["name"]] is None
    table = (out_dir / "transfer.md").read_text()
    assert "tiny/tiny-bert" in table and "manual prompt" in table
    assert (out_dir / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Mask placement when the prompt text is formatted for a masked model.
    assert prompt.fill("fine .", kind="masked").endswith(f"{prompt.text.strip()} <mask> .")


def test_round_trip_and_weight_artifacts_are_reported(learned_prompt, tmp_path, capsys):
    prompt = load_prompt(learned_prompt)
    # A prompt whose ids are not what its text tokenizes to (say, two tokens that merge when re-read).
    odd = asdict(prompt) | {"token_ids": prompt.token_ids[:1] + [prompt.token_ids[0]] * 2, "text": "xx yy zz"}
    save_prompt(type(prompt)(**odd), tmp_path / "odd.json")
    # A LoRA run's directory as a comparison leaves it: its export's description, no prompt.json.
    lora_run = tmp_path / "lora__s0"
    (lora_run / "lora").mkdir(parents=True)
    meta = {"format": "rlprompt.adapter", "version": 1, "method": "lora", "model": prompt.model,
            "model_kind": prompt.model_kind, "template": prompt.template, "verbalizers": prompt.verbalizers,
            "class_names": prompt.class_names, "task": prompt.task, "task_source": prompt.task_source,
            "data_seed": prompt.data_seed, "seed": 0, "prompt": "It was", "metrics": {}}  # fmt: skip
    (lora_run / "lora" / "rlprompt_adapter.json").write_text(json.dumps(meta))
    rl_run = learned_prompt.parent  # a run directory names its prompt.json
    argv = ["--prompts", str(tmp_path / "odd.json"), str(lora_run), str(rl_run),
            "--models", "tiny-gpt2,tiny-bert",
            "--output-dir", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "transfer.json").read_text())
    odd_row, lora_row, rl_row = result["rows"][:3]
    assert "re-tokenizing the text 'xx yy zz' for tiny-gpt2 gives" in result["round_trip"][odd_row["name"]]
    assert lora_row["name"].startswith("lora s0") and lora_row["text"] == "(a PEFT weight adapter)"
    assert "cannot move to another model" in lora_row["cells"]["tiny/tiny-bert"]["not_applicable"]
    assert "rlprompt.evaluate" in lora_row["cells"]["tiny/tiny-gpt2"]["not_applicable"]
    assert lora_row["name"] not in result["round_trip"]  # weights have no text to re-tokenize
    assert rl_row["text"] == prompt.text and 0 <= rl_row["cells"]["tiny/tiny-bert"]["accuracy"] <= 1
    assert "n/a" in (tmp_path / "out" / "transfer.md").read_text()
    # A directory that holds neither is one line.
    (tmp_path / "empty").mkdir()
    argv = ["--prompts", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out2"), "--quiet"]
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    assert done.value.code == 2
    assert "a directory with neither prompt.json nor an exported baseline" in capsys.readouterr().err


def test_an_unknown_task_is_refused_before_any_model_loads(learned_prompt, tmp_path, capsys):
    """The task list is checked first: a typo in the last task does not cost every model's evaluation (the
    model named here does not exist either, and is not what the error names)."""
    task = str(learned_prompt.parents[2] / "task.yaml")
    argv = ["--prompts", str(learned_prompt), "--models", "no-such-model", "--tasks", f"{task},nosuch",
            "--output-dir", str(tmp_path / "transfer"), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: unknown task 'nosuch'"), err
    assert not (tmp_path / "transfer").exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_directory_that_cannot_be_made_is_refused_before_any_scoring(
    learned_prompt, tmp_path, capsys, monkeypatch, where
):
    """A transfer's outputs are written after all its scoring (tens of minutes): --output-dir naming a
    file, or a path under one, is refused first, in one line."""
    import rlprompt.transfer as transfer

    monkeypatch.setattr(transfer, "run_transfer", lambda *a, **k: pytest.fail("scored before the check"))
    a_file = tmp_path / "taken"
    a_file.write_text("keep", encoding="utf-8")
    out = a_file if where == "a file" else a_file / "transfer"
    argv = ["--prompts", str(learned_prompt), "--output-dir", str(out), "--quiet"]
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--output-dir {out}: " in err and "not a directory" in err, err
    assert a_file.read_text(encoding="utf-8") == "keep"


def test_a_prompt_keeps_its_own_template_on_its_own_task_as_evaluate_scores_it(
    learned_prompt, tmp_path, capsys, monkeypatch
):
    """A prompt learned behind an instruction (or demonstrations) is scored behind it on its own task, on
    any model of its kind, as the run and evaluate score it; another kind gets that kind's template. Before,
    transfer dropped the instruction and scored another input than the run had."""
    from rlprompt.evaluate import main as evaluate_main

    prompt = load_prompt(learned_prompt)
    instructed = asdict(prompt) | {"template": "Is this review good or bad?\n{sentence} {prompt} <mask>"}
    save_prompt(type(prompt)(**instructed), tmp_path / "instructed.json")
    argv = ["--prompts", str(tmp_path / "instructed.json"), str(learned_prompt), "--models",
            "tiny-gpt2,tiny-bert", "--output-dir", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    result = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert result["templates"]["tiny/tiny-gpt2"] == (
        "Is this review good or bad?\n{sentence} {prompt} <mask> | {sentence} {prompt} <mask>"
    )
    assert result["templates"]["tiny/tiny-bert"] == "{sentence} {prompt} <mask> ."
    assert "Is this review good or bad?\\n{sentence}" in (tmp_path / "out" / "transfer.md").read_text()
    for path, row in ((tmp_path / "instructed.json", result["rows"][0]), (learned_prompt, result["rows"][1])):
        with pytest.raises(SystemExit) as done:
            run_cli(evaluate_main, ["--prompt-file", str(path), "--json"])
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        scored = json.loads(out)["results"][0]
        assert row["cells"]["tiny/tiny-gpt2"]["calibrated"] == pytest.approx(scored["accuracy"])
    # Its own task named by a relative path is still its own task (prompt files record the resolved path).
    monkeypatch.chdir(learned_prompt.parents[2])
    argv = ["--prompts", str(tmp_path / "instructed.json"), "--models", "tiny-gpt2", "--tasks", "task.yaml",
            "--output-dir", str(tmp_path / "relative"), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(transfer_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    relative = json.loads((tmp_path / "relative" / "transfer.json").read_text())
    assert relative["templates"]["tiny/tiny-gpt2"].startswith("Is this review good or bad?")


def test_evaluate_scores_a_prompt_file_as_its_run_did_and_refuses_what_it_cannot(
    learned_prompt, tmp_path, capsys
):
    """A prompt file's own task keeps its label words when --task names it too; a run on a test sample
    (task.test_examples) is evaluated on the same sample by default, and --limit draws its sample the same
    way (MR's and CR's test files are sorted by label: their first N were one class); prompt files that
    disagree on their template are refused, and an adapter on another model is one line."""
    from rlprompt.evaluate import main as evaluate_main
    from rlprompt.tasks import load_task, sampled_test

    def evaluate(*argv):
        with pytest.raises(SystemExit) as done:
            run_cli(evaluate_main, [*argv, "--json"])
        out, err = capsys.readouterr()
        return done.value.code, (json.loads(out) if done.value.code == 0 else err)

    prompt = load_prompt(learned_prompt)
    task_file = str(learned_prompt.parents[2] / "task.yaml")
    code, payload = evaluate("--prompt-file", str(learned_prompt.parent), "--task", task_file)  # its run
    assert code == 0 and payload["verbalizers"] == ["bad", "good"]
    (tmp_path / "no_run").mkdir()
    code, err = evaluate("--prompt-file", str(tmp_path / "no_run"))
    assert code == 2 and "a directory without prompt.json" in err
    sampled = asdict(prompt) | {"test_examples": 3}
    save_prompt(type(prompt)(**sampled), tmp_path / "sampled.json")
    code, payload = evaluate("--prompt-file", str(tmp_path / "sampled.json"))
    assert code == 0 and payload["results"][0]["n"] == 3
    labels = [ex.label for ex in sampled_test(load_task("sst-2").examples("test"), 50)]
    assert 15 < sum(labels) < 35, "a sample of both classes"
    code, payload = evaluate("--prompt", "It was", "--task", "cr", "--model", "tiny-gpt2", "--limit", "50")
    assert code == 0 and set(payload["results"][0]["per_class_accuracy"]) == {"terrible", "great"}
    other = asdict(prompt) | {"template": "Review: {sentence} {prompt} <mask>"}
    save_prompt(type(prompt)(**other), tmp_path / "other.json")
    code, err = evaluate("--prompt-file", str(learned_prompt), "--prompt-file", str(tmp_path / "other.json"))
    assert code == 2 and "the prompt files differ in their template" in err and "--template" in err
    adapter = tmp_path / "lora"
    adapter.mkdir()
    meta = {"format": "rlprompt.adapter", "version": 1, "method": "lora", "model": "tiny-gpt2",
            "model_kind": "causal", "template": prompt.template, "verbalizers": prompt.verbalizers,
            "class_names": prompt.class_names, "task": prompt.task, "task_source": prompt.task_source,
            "data_seed": prompt.data_seed, "seed": 0, "prompt": "It was", "metrics": {}}  # fmt: skip
    (adapter / "rlprompt_adapter.json").write_text(json.dumps(meta))
    code, err = evaluate("--adapter", str(adapter), "--model", "tiny-bert")
    assert code == 2 and "is weights for tiny-gpt2" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_warns_when_a_prompt_files_text_was_edited_but_its_ids_kept(
    learned_prompt, tmp_path, capsys
):
    """On its own model a prompt file is scored by its ids: a text edited by hand would otherwise be
    silently not what is scored. The file as the run wrote it draws no warning."""
    from rlprompt.evaluate import main as evaluate_main

    def stderr_of(path):
        with pytest.raises(SystemExit) as done:
            run_cli(evaluate_main, ["--prompt-file", str(path), "--json"])
        err = capsys.readouterr().err
        assert done.value.code == 0, err
        return err

    assert "warning" not in stderr_of(learned_prompt)
    prompt = load_prompt(learned_prompt)
    edited = asdict(prompt) | {"text": "Absolutely wonderful", "ensemble": []}
    save_prompt(type(prompt)(**edited), tmp_path / "edited.json")
    warnings = [line for line in stderr_of(tmp_path / "edited.json").splitlines() if "warning" in line]
    assert len(warnings) == 1 and "edited.json" in warnings[0] and "'Absolutely wonderful'" in warnings[0]
    assert "--prompt" in warnings[0]
