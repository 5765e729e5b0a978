"""User data as it comes: one file with a split column, or no dev/test split at all (carved out,
stratified, with a split seed of its own), labels of any scalar type; each bad input is one line."""

from __future__ import annotations

import json

import pytest

from rlprompt.errors import RLPromptError
from rlprompt.tasks import load_task

POSITIVE = ["a joy to watch .", "warm and funny .", "a small gem .", "one of the best films .", "lovely .",
            "a delight .", "moving and wise .", "great fun ."]  # fmt: skip
NEGATIVE = ["a dull mess .", "tedious .", "i hated every minute .", "the plot makes no sense .", "bad .",
            "a chore .", "flat and lifeless .", "boring ."]  # fmt: skip


def _write(tmp_path, rows, header="text\tlabel\tsplit", task_extra=""):
    (tmp_path / "all.tsv").write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    spec = (
        "name: mine\ndata: all.tsv\ntext_column: text\nverbalizers: {neg: terrible, pos: great}\n"
        + task_extra
    )
    (tmp_path / "task.yaml").write_text(spec)
    return str(tmp_path / "task.yaml")


def test_one_file_with_a_split_column(tmp_path):
    splits = ["train", "train", "validation", "test"] * 4
    rows = [(s, "pos", sp) for s, sp in zip(POSITIVE, splits, strict=False)]
    rows += [(s, "neg", sp) for s, sp in zip(NEGATIVE, splits, strict=False)]
    task = load_task(_write(tmp_path, rows, task_extra="split_column: split\n"))
    sizes = {s: len(task.examples(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 8, "dev": 4, "test": 4}, "'validation' is a dev name"
    assert {ex.label for ex in task.examples("dev")} == {0, 1}
    record = task.split_record
    assert record["split_column"] == "split" and len(record["splits"]["test"]) == 4


def test_a_file_without_splits_is_carved_stratified_and_the_same_for_every_run(tmp_path):
    rows = [(s, "pos", "x") for s in POSITIVE] + [(s, "neg", "x") for s in NEGATIVE]
    path = _write(tmp_path, rows, task_extra="dev_size: 0.25\ntest_size: 0.25\nsplit_seed: 7\n")
    task = load_task(path)
    test = task.examples("test")
    assert len(test) == 4 and sorted(ex.label for ex in test) == [0, 0, 1, 1], "stratified"
    assert len(task.examples("dev")) == 4 and len(task.examples("train")) == 8
    uids = [set(ex.uid for ex in task.examples(s)) for s in ("train", "dev", "test")]
    assert not (uids[0] & uids[1] or uids[0] & uids[2] or uids[1] & uids[2])
    assert [ex.uid for ex in load_task(path).examples("test")] == [ex.uid for ex in test], "seeded"
    other = _write(tmp_path, rows, task_extra="dev_size: 0.25\ntest_size: 0.25\nsplit_seed: 8\n")
    assert [ex.uid for ex in load_task(other).examples("test")] != [ex.uid for ex in test]


def test_labels_of_any_scalar_type(tmp_path):
    lines = [json.dumps({"text": s, "label": True, "split": "train"}) for s in POSITIVE[:2]]
    lines += [json.dumps({"text": s, "label": False, "split": "train"}) for s in NEGATIVE[:2]]
    lines += [json.dumps({"text": s, "label": y, "split": sp})
              for s, y, sp in [("ok .", True, "dev"), ("no .", False, "dev"), ("yes .", True, "test"),
                               ("nope .", False, "test")]]  # fmt: skip
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n")
    spec = (
        "data: all.jsonl\ntext_column: text\nsplit_column: split\n"
        "verbalizers: {false: terrible, true: great}\n"
    )
    (tmp_path / "task.yaml").write_text(spec)
    task = load_task(str(tmp_path / "task.yaml"))
    assert [ex.label for ex in task.examples("train")] == [1, 1, 0, 0]


@pytest.mark.parametrize(
    ("extra", "rows", "message"),
    [
        ("split_column: split\n", [("a .", "pos", "train"), ("b .", "neg", "holdout")],
         r"all\.tsv:3: split column 'split' has the value 'holdout'; known split names: "),
        ("split_column: split\n", [("a .", "pos", "train"), ("b .", "neg", "train"), ("c .", "pos", "dev"),
                                   ("d .", "pos", "test"), ("e .", "neg", "test")],
         "class 'neg' has no examples in the dev split"),
        ("dev_size: 0.5\n", [("a .", "pos", "x"), ("b .", "neg", "x")],
         "'dev_size' would leave a split without class 'neg': it has fewer than 2 training examples"),
        ("dev_size: 0.5\n", [(s, y, "x") for s in ("a .", "b .", "c .") for y in ("pos", "neg")],
         "the task has no test examples; give a 'test' file"),
        ("test_size: 1.5\n", [("a .", "pos", "x")], "'test_size' must be a fraction between 0 and 1 or a"),
    ],
)  # fmt: skip
def test_bad_splits_are_one_line_errors(tmp_path, extra, rows, message):
    with pytest.raises(RLPromptError, match=message):
        task = load_task(_write(tmp_path, rows, task_extra=extra))
        task.examples("train")


def test_a_carved_count_is_exact_and_one_that_cannot_be_met_is_refused(tmp_path):
    """``test_size: 5`` on 16 rows of two classes gives 5 test rows (3 + 2), not the per-class rounding's
    4 or 6; a count that would empty a class on one side is an error."""
    rows = [(s, "pos", "x") for s in POSITIVE] + [(s, "neg", "x") for s in NEGATIVE]
    for count in (2, 3, 5, 9, 12):
        task = load_task(_write(tmp_path, rows, task_extra=f"test_size: {count}\ndev_size: 0.25\n"))
        test = task.examples("test")
        assert len(test) == count and {ex.label for ex in test} == {0, 1}
        assert len(task.examples("train")) + len(task.examples("dev")) == 16 - count
    for count in (1, 15, 100):
        with pytest.raises(
            RLPromptError,
            match=f"'test_size' {count} cannot be carved out of 16 training "
            r"rows of 2 classes.*from 2 to 14",
        ):
            load_task(_write(tmp_path, rows, task_extra=f"test_size: {count}\ndev_size: 0.25\n")).examples(
                "train"
            )


def test_a_split_given_by_a_column_and_a_file_is_refused(tmp_path):
    splits = ["train", "train", "validation", "test"] * 2
    rows = [
        (s, y, sp)
        for y, group in (("pos", POSITIVE), ("neg", NEGATIVE))
        for s, sp in zip(group, splits, strict=True)
    ]
    path = _write(tmp_path, rows, task_extra="split_column: split\ndev: dev.tsv\n")
    (tmp_path / "dev.tsv").write_text("text\tlabel\nfine .\tpos\nawful .\tneg\n")
    with pytest.raises(
        RLPromptError,
        match=r"the 'dev' file and the dev rows of .*all\.tsv's split column "
        "'split' both give a dev split; drop one of them",
    ):
        load_task(path).examples("train")


def test_text_keeps_its_line_breaks_and_labels_match_across_spellings(tmp_path):
    """A quoted CSV field may hold a line break (kept, not glued); U+2028 and form feeds are text in TSV
    and JSONL, not line ends. Labels 5.0 / 5 and True / 'true' are the same label; keys that collide, or
    one class alone, are refused."""
    (tmp_path / "train.csv").write_text(
        'text,label\n"a wonderful film\nto the end",5.0\n"a dull\u2028mess",1\n"warm, funny",5\nboring,1.0\n',
        encoding="utf-8",
    )
    (tmp_path / "dev.tsv").write_text("text\tlabel\nlovely\u2028film\x0cyes\t5\nbad\t1\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"text": "fine\u2028film", "label": 5}, ensure_ascii=False)
        + "\n"
        + json.dumps({"text": "awful", "label": "1"})
        + "\n"
    )
    spec = "train: train.csv\ndev: dev.tsv\ntest: test.jsonl\ntext_column: text\n"
    (tmp_path / "task.yaml").write_text(spec + "verbalizers: {1: terrible, 5: great}\n")
    task = load_task(str(tmp_path / "task.yaml"))
    train = task.examples("train")
    assert [ex.text for ex in train[:2]] == ["a wonderful film\nto the end", "a dull\u2028mess"]
    assert [ex.label for ex in train] == [1, 0, 1, 0]
    assert [ex.text for ex in task.examples("dev")] == ["lovely\u2028film\x0cyes", "bad"]
    assert [ex.text for ex in task.examples("test")] == ["fine\u2028film", "awful"]
    assert train[1].uid.endswith("/4"), "a row is named by the line it starts on"
    (tmp_path / "bool.tsv").write_text("text\tlabel\nyes .\ttrue\nno .\tFalse\n")
    (tmp_path / "bool.yaml").write_text(
        "train: bool.tsv\ndev: bool.tsv\ntest: bool.tsv\ntext_column: text\n"
        "verbalizers: {false: terrible, true: great}\n"
    )
    assert [ex.label for ex in load_task(str(tmp_path / "bool.yaml")).examples("train")] == [1, 0]
    for verbalizers, message in (
        ("{1: terrible, '1': bad, 5: great}", "verbalizers 1 and '1' are the same label"),
        ("{5: great}", "'verbalizers' names one label"),
    ):
        (tmp_path / "task.yaml").write_text(spec + f"verbalizers: {verbalizers}\n")
        with pytest.raises(RLPromptError, match=message):
            load_task(str(tmp_path / "task.yaml")).examples("train")


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_a_split_file_without_a_class_is_a_one_line_error(tmp_path, split):
    """Separate train and dev files are checked as a split column is: a class missing from one (here
    only positive reviews in it) is named with the file, before training. A test file may hold one class
    (to score that class alone)."""
    for name in ("train", "dev", "test"):
        kept = POSITIVE[:3] if name == split else POSITIVE[:3] + NEGATIVE[:3]
        labels = ["pos"] * 3 + ["neg"] * (len(kept) - 3)
        (tmp_path / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(
            kept, labels, strict=True)))  # fmt: skip
    (tmp_path / "task.yaml").write_text(
        "name: mine\ntrain: train.tsv\ndev: dev.tsv\ntest: test.tsv\ntext_column: text\n"
        "verbalizers: {neg: terrible, pos: great}\n"
    )
    task = load_task(str(tmp_path / "task.yaml"))
    for other in {"train", "dev", "test"} - {split}:
        assert len(task.examples(other)) == 6
    if split == "test":
        assert {ex.label for ex in task.examples("test")} == {1}
        return
    with pytest.raises(RLPromptError, match=f"{split}.tsv: class 'neg' has no examples in the {split} split"):
        task.examples(split)


TINY = ["--set", "total_timesteps=40", "--set", "evaluations=2", "--set", "env.num_envs=4",
        "--set", "env.examples_per_reward=4", "--set", "rl.batch_size=20", "--set", "vocab.size=30",
        "--set", "policy.adapter_hidden=16"]  # fmt: skip


def test_a_split_column_file_trains_from_the_cli_and_records_its_split(tiny_gpt2, tmp_path, capsys):
    from rlprompt.errors import run_cli
    from rlprompt.models import register_model
    from rlprompt.train import main as train_main

    register_model(tiny_gpt2)
    splits = ["train", "train", "dev", "test"] * 2
    rows = [(s, "pos", sp) for s, sp in zip(POSITIVE, splits, strict=True)]
    rows += [(s, "neg", sp) for s, sp in zip(NEGATIVE, splits, strict=True)]
    task = _write(tmp_path, rows, task_extra="split_column: split\n")
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--quiet", "--run-dir", str(tmp_path / "run"), "--set", "model=tiny-gpt2",
                             "--set", f"task={task}", *TINY])  # fmt: skip
    assert done.value.code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [len(record["splits"][s]) for s in ("train", "dev", "test")] == [8, 4, 4]


def test_a_file_without_splits_trains_from_python(tiny_gpt2, tmp_path):
    import rlprompt
    from rlprompt.models import register_model

    register_model(tiny_gpt2)
    rows = [(s, "pos", "x") for s in POSITIVE] + [(s, "neg", "x") for s in NEGATIVE]
    task = _write(tmp_path, rows, task_extra="dev_size: 0.25\ntest_size: 0.25\n")
    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    prompt = rlprompt.learn(model="tiny-gpt2", task=task, overrides=overrides, run_dir=tmp_path / "run",
                            progress=False)  # fmt: skip
    assert prompt.metrics["test_accuracy"] in {0.0, 0.25, 0.5, 0.75, 1.0}, "4 carved test examples"
    assert json.loads((tmp_path / "run" / "split.json").read_text())["dev_size"] == 0.25


def test_parquet_and_saved_datasets_directories(tmp_path):
    """Parquet files and ``datasets``' save_to_disk directories (a DatasetDict splits itself; its ClassLabel
    ints are labels like any other), read offline."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"text": POSITIVE[:3] + NEGATIVE[:3], "label": [1, 1, 1, 0, 0, 0]}
    pq.write_table(pa.table(rows), tmp_path / "train.parquet")
    (tmp_path / "t.yaml").write_text("train: train.parquet\ntest_size: 2\ndev_size: 2\ntext_column: text\n"
                                     "verbalizers: {0: terrible, 1: great}\n")  # fmt: skip
    task = load_task(str(tmp_path / "t.yaml"))
    assert [len(task.examples(s)) for s in ("train", "dev", "test")] == [2, 2, 2]

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})  # fmt: skip
    split = {
        name: datasets.Dataset.from_dict(rows, features=features) for name in ("train", "validation", "test")
    }
    datasets.DatasetDict(split).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "d.yaml").write_text("data: saved\ntext_column: text\nverbalizers: {0: terrible, 1: great}\n")
    task = load_task(str(tmp_path / "d.yaml"))
    assert [len(task.examples(s)) for s in ("train", "dev", "test")] == [6, 6, 6]
    assert [ex.label for ex in task.examples("dev")] == [1, 1, 1, 0, 0, 0]
    with pytest.raises(RLPromptError, match="not a saved dataset"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "e.yaml").write_text("train: empty\nverbalizers: {0: a, 1: b}\n")
        load_task(str(tmp_path / "e.yaml")).examples("train")


def test_a_split_column_file_trains_from_python(tiny_gpt2, tmp_path):
    import rlprompt
    from rlprompt.models import register_model

    register_model(tiny_gpt2)
    splits = ["train", "train", "dev", "test"] * 2
    rows = [(s, "pos", sp) for s, sp in zip(POSITIVE, splits, strict=True)]
    rows += [(s, "neg", sp) for s, sp in zip(NEGATIVE, splits, strict=True)]
    task = _write(tmp_path, rows, task_extra="split_column: split\n")
    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    prompt = rlprompt.learn(model="tiny-gpt2", task=task, overrides=overrides, run_dir=tmp_path / "run",
                            progress=False)  # fmt: skip
    assert prompt.metrics["test_accuracy"] in {0.0, 0.25, 0.5, 0.75, 1.0}, "4 test rows in the file"
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [len(record["splits"][s]) for s in ("train", "dev", "test")] == [8, 4, 4]


def test_a_task_file_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """config.yaml and prompt.json keep the task file as an absolute path: a resume or an evaluation from
    another directory reads this file, not a task.yaml that happens to be there."""
    from rlprompt.config import load_train_config

    rows = [(s, "pos", "x") for s in POSITIVE] + [(s, "neg", "x") for s in NEGATIVE]
    _write(tmp_path, rows, task_extra="dev_size: 0.25\ntest_size: 0.25\n")
    monkeypatch.chdir(tmp_path)
    assert load_train_config(None, ["task.name=task.yaml"]).task.name == str(tmp_path / "task.yaml")
    assert load_train_config(None, ["task.name=sst-2"]).task.name == "sst-2"
