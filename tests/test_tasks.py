"""Built-in tasks, user task files and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlprompt.errors import RLPromptError
from rlprompt.tasks import BUILTIN_TASKS, FEW_SHOT_SEEDS, builtin_task, data_root, load_task, read_table
from tests.conftest import SHARED_DATA

SIZES = {"sst-2": (32, 1821), "mr": (32, 2000), "cr": (32, 2000), "sst-5": (80, 2210), "agnews": (64, 7600)}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_tasks_load_with_all_seeds(name):
    train_size, test_size = SIZES[name]
    for seed in FEW_SHOT_SEEDS:
        task = builtin_task(name, seed)
        train, dev = task.examples("train"), task.examples("dev")
        assert len(train) == len(dev) == train_size
        counts = [sum(ex.label == c for ex in train) for c in range(task.num_classes)]
        assert counts == [16] * task.num_classes  # 16 shots per class
        assert len({ex.uid for ex in train + dev}) == 2 * train_size
    assert len(task.examples("test")) == test_size
    # The source data has one blank sentence (in cr's test set); it must load, not shift rows.
    assert sum(not ex.text.strip() for ex in task.examples("test")) <= 1


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside this checkout")
def test_packaged_data_is_an_exact_copy_of_shared():
    shared = SHARED_DATA / "few-shot"
    ours = sorted(p.relative_to(data_root()) for p in data_root().rglob("*.tsv"))
    assert ours == sorted(p.relative_to(shared) for p in shared.rglob("*.tsv"))
    for rel in ours:
        assert (data_root() / rel).read_bytes() == (shared / rel).read_bytes(), rel


def test_sentences_starting_with_quotes_are_not_merged():
    rows = read_table(data_root() / "mr" / "test.tsv")[1]
    assert len(rows) == 2000
    assert any(row["sentence"].startswith('"') for _, row in rows)


def test_templates_follow_the_model_kind():
    sst2, agnews = builtin_task("sst-2"), builtin_task("agnews")
    assert sst2.template_for("causal") == "{sentence} {prompt}"
    assert sst2.template_for("masked") == "{sentence} {prompt} <mask> ."
    assert agnews.template_for("masked") == "<mask> {prompt} {sentence}"


def write_task(tmp_path: Path, data_name: str, data: str, **spec) -> Path:
    (tmp_path / data_name).write_text(data, encoding="utf-8")
    spec = {"train": data_name, "verbalizers": {"neg": "bad", "pos": "good"}, "text_column": "review",
            "label_column": "sentiment", **spec}  # fmt: skip
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return path


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("d.tsv", 'review\tsentiment\n"quoted" start\tpos\nmeh\tneg\n'),
        ("d.csv", 'review,sentiment\n"has, a comma",pos\nmeh,neg\n'),
        (
            "d.jsonl",
            '{"review": "has, a comma", "sentiment": "pos"}\n\n{"review": "meh", "sentiment": "neg"}\n',
        ),
    ],
)
def test_user_task_files(tmp_path, name, data):
    task = load_task(str(write_task(tmp_path, name, data, template="{sentence} {prompt}")))
    examples = task.examples("train")
    assert [ex.label for ex in examples] == [1, 0]
    assert examples[0].text in ('"quoted" start', "has, a comma")
    assert task.verbalizers == ["bad", "good"] and task.class_names == ["neg", "pos"]
    assert task.template_for("causal") == "{sentence} {prompt}"


def test_numeric_labels_match_yaml_int_keys(tmp_path):
    data = '{"review": "x", "sentiment": 5}\n{"review": "y", "sentiment": 1.0}\n'
    path = write_task(tmp_path, "d.jsonl", data, verbalizers={1: "terrible", 5: "great"})
    assert [ex.label for ex in load_task(str(path)).examples("train")] == [1, 0]


@pytest.mark.parametrize(
    ("name", "data", "spec", "message"),
    [
        ("d.tsv", "", {}, r"d\.tsv: file is empty"),
        ("d.tsv", "review\tsentiment\n", {}, r"d\.tsv: no examples"),
        (
            "d.tsv",
            "text\tsentiment\nx\tpos\n",
            {},
            r"d\.tsv: no text column 'review'; columns are text, sentiment",
        ),
        ("d.tsv", "review\tlabel\nx\tpos\n", {}, r"no label column 'sentiment'; columns are review, label"),
        (
            "d.tsv",
            "review\tsentiment\nx\tpos\ny\tneutral\n",
            {},
            r"d\.tsv:3: label 'neutral' has no verbalizer",
        ),
        ("d.tsv", "review\tsentiment\nx\tpos\textra\n", {}, r"d\.tsv:2: 3 fields, but the header has 2"),
        ("d.jsonl", '{"review": "x", "sentiment": "pos"}\n{oops\n', {}, r"d\.jsonl:2: not valid JSON"),
        ("d.jsonl", '["x", "pos"]\n', {}, r"d\.jsonl:1: each line must be a JSON object"),
        ("d.txt", "review\tsentiment\n", {}, r"unsupported data file type '\.txt'"),
        (
            "d.tsv",
            "review\tsentiment\nx\tpos\ny\tneg\n",
            {"dev": "missing.tsv"},
            r"missing\.tsv: file not found",
        ),
        ("d.tsv", "review\tsentiment\nx\tpos\n", {"verbalizer": {}}, r"unknown task key 'verbalizer'"),
        ("d.tsv", "review\tsentiment\nx\tpos\n", {"verbalizers": ["bad", "good"]}, "'verbalizers' must map"),
        ("d.tsv", "review\tsentiment\nx\tpos\n", {"verbalizers": {"pos": ""}}, "must be a non-empty word"),
    ],
)
def test_bad_task_files_are_clear_errors(tmp_path, name, data, spec, message):
    path = write_task(tmp_path, name, data, **spec)
    with pytest.raises(RLPromptError, match=message):
        task = load_task(str(path))
        for split in task.split_files:
            task.examples(split)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = write_task(tmp_path, "d.tsv", "")
    (tmp_path / "d.tsv").write_bytes("review\tsentiment\ncaf\xe9\tpos\n".encode("latin-1"))
    with pytest.raises(RLPromptError, match=r"d\.tsv: not UTF-8 text \(bad byte at offset 20\)"):
        load_task(str(path)).examples("train")


def test_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(RLPromptError, match="unknown task 'sst2'; built-in tasks are sst-2, mr"):
        load_task("sst2")
    with pytest.raises(RLPromptError, match="unknown data seed '16-1'"):
        load_task("sst-2", seed="16-1")
    with pytest.raises(RLPromptError, match="task 'sst-2' has no validation|unknown split 'validation'"):
        builtin_task("sst-2").examples("validation")
    bad_yaml = tmp_path / "t.yaml"
    bad_yaml.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(RLPromptError, match=r"t\.yaml: not valid YAML"):
        load_task(str(bad_yaml))


def test_test_examples_takes_the_same_seeded_sample_in_file_order():
    """task.test_examples: AG News's 7,600 test examples cut to a fixed 2,000, in their order, the same on
    every load; a task with no more than that keeps all."""
    full = builtin_task("agnews", "16-100").examples("test")
    order = {ex.uid: i for i, ex in enumerate(full)}
    samples = []
    for _ in range(2):
        task = builtin_task("agnews", "16-100")
        task.test_limit = 2000
        samples.append(task.examples("test"))
    a, b = samples
    assert len(a) == 2000 and [ex.uid for ex in a] == [ex.uid for ex in b]
    positions = [order[ex.uid] for ex in a]
    assert positions == sorted(positions) and positions[-1] > 7000  # spread over the file, in its order
    assert sorted({ex.label for ex in a}) == [0, 1, 2, 3]
    task = builtin_task("mr", "16-100")
    task.test_limit = 5000
    assert len(task.examples("test")) == 2000
    assert len(task.examples("train")) == 32  # only test is sampled


def test_test_examples_reaches_the_run_and_a_bad_value_is_refused(tmp_path, capsys, tiny_gpt2):
    from rlprompt.methods import MethodResult
    from rlprompt.models import register_model
    from tests.conftest import train_cli, write_task
    from tests.test_methods import ROWS

    register_model(tiny_gpt2)
    write_task(tmp_path, "tiny", ROWS)
    run_dir, _ = train_cli(tmp_path, capsys, "model=tiny-gpt2", "method=manual", "task.test_examples=3")
    assert len(MethodResult.load(run_dir / "result.json").test_correct) == 3 < len(ROWS)
    train_cli(tmp_path, capsys, "model=tiny-gpt2", "method=manual", "task.test_examples=0", expect=2)
    from rlprompt.config import TaskConfig

    with pytest.raises(ValueError, match="'task.test_examples' must be at least 1"):
        TaskConfig(test_examples=0)


def test_task_verbalizers_replace_the_label_words_for_the_run_its_prompt_file_and_evaluate(
    tmp_path, capsys, tiny_gpt2, monkeypatch
):
    from rlprompt.config import TaskConfig
    from rlprompt.errors import run_cli
    from rlprompt.evaluate import main as evaluate_main
    from rlprompt.evaluation import evaluate_prompts, make_scorer
    from rlprompt.methods import MethodResult
    from rlprompt.models import register_model
    from tests.conftest import train_cli, write_task
    from tests.test_methods import ROWS

    register_model(tiny_gpt2)
    write_task(tmp_path, "tiny", ROWS)  # terrible / great
    run_dir, _ = train_cli(tmp_path, capsys, "model=tiny-gpt2", "method=manual", "calibration=none",
                           "task.verbalizers=[awful, superb]")  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    assert exported["verbalizers"] == ["awful", "superb"]
    # The run scored test through the new words: its per-example predictions are those of a scorer built
    # with them, not with the task's own
    task = load_task(str(tmp_path / "task.yaml"))
    test = task.examples("test")
    correct = {}
    for words in (["awful", "superb"], ["terrible", "great"]):
        task.verbalizers = words
        (scored,) = evaluate_prompts(make_scorer(tiny_gpt2, task, prompt_budget=8), test, ["It was"])
        correct[words[0]] = "".join(
            "1" if p == ex.label else "0" for p, ex in zip(scored.scores.argmax(-1), test, strict=True)
        )
    assert MethodResult.load(run_dir / "result.json").test_correct == correct["awful"] != correct["terrible"]
    # evaluate reads the prompt file's words on its own task
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", str(run_dir / "prompt.json"), "--model", "tiny-gpt2",
                                "--calibration", "none", "--json"])  # fmt: skip
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["verbalizers"] == ["awful", "superb"]
    # transfer too, on the prompt's own task (the manual and empty prompts of that column with it)
    import rlprompt.transfer as transfer

    built_with = []

    def spy(lm, task, *args, **kwargs):
        built_with.append(list(task.verbalizers))
        return make_scorer(lm, task, *args, **kwargs)

    monkeypatch.setattr(transfer, "make_scorer", spy)
    transfer.run_transfer([run_dir / "prompt.json"], ["tiny-gpt2"], [str(tmp_path / "task.yaml")],
                          progress=False, calibration="none")  # fmt: skip
    assert built_with == [["awful", "superb"]]
    # One word per class, distinct
    train_cli(
        tmp_path, capsys, "model=tiny-gpt2", "method=manual", "task.verbalizers=[bad, ok, good]", expect=2
    )
    with pytest.raises(ValueError, match="'task.verbalizers' must be distinct"):
        TaskConfig(verbalizers=["good", "good"])
