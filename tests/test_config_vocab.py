"""The typed config loader and the action vocabularies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from rlprompt.errors import RLPromptError
from rlprompt.files import read_yaml
from rlprompt.settings import apply_overrides, from_dict
from rlprompt.vocab import action_vocabulary

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RL:
    algo: Literal["ppo", "a2c"] = "ppo"
    learning_rate: float = 3e-4
    n_steps: int = 5


@dataclass
class Run:
    model: str = "smollm2-135m"
    seed: int = 0
    normalize: bool = True
    template: str | None = None
    rl: RL = field(default_factory=RL)
    tokens: list[str] = field(default_factory=list)


def test_values_are_coerced_to_field_types():
    run = from_dict(
        Run, {"seed": "7", "rl": {"learning_rate": "5e-5", "n_steps": 1e3}, "normalize": "false"}, "c.yaml"
    )
    assert (run.seed, run.rl.learning_rate, run.rl.n_steps, run.normalize) == (7, 5e-5, 1000, False)
    assert from_dict(Run, {"template": None}, "c.yaml").template is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seeds": 1}, "c.yaml: unknown key 'seeds'; did you mean 'seed'?"),
        (
            {"rl": {"learning_rat": 1}},
            "c.yaml: unknown key 'rl.learning_rat'; did you mean 'rl.learning_rate'?",
        ),
        ({"rl": {"algo": "dqn"}}, "c.yaml: 'rl.algo' must be one of 'ppo', 'a2c', got 'dqn'"),
        ({"seed": 1.5}, "c.yaml: 'seed' must be an integer, got 1.5"),
        ({"seed": True}, "c.yaml: 'seed' must be an integer, got True"),
        ({"rl": {"learning_rate": "fast"}}, "c.yaml: 'rl.learning_rate' must be a number, got 'fast'"),
        ({"rl": 3}, "c.yaml: 'rl' must be a mapping, got 3"),
        ({"tokens": "good"}, "c.yaml: 'tokens' must be a list, got 'good'"),
        ({"normalize": "maybe"}, "c.yaml: 'normalize' must be true or false, got 'maybe'"),
    ],
)
def test_bad_configs_name_the_file_and_key(data, message):
    with pytest.raises(RLPromptError) as err:
        from_dict(Run, data, "c.yaml")
    assert str(err.value) == message


def test_set_overrides_are_parsed_and_checked():
    data = apply_overrides({"rl": {"n_steps": 5}}, ["rl.learning_rate=1e-3", "seed=3", "template="], Run)
    run = from_dict(Run, data, "c.yaml")
    assert (run.rl.learning_rate, run.rl.n_steps, run.seed, run.template) == (1e-3, 5, 3, "")
    with pytest.raises(RLPromptError, match=r"--set rl\.lr: unknown key 'rl\.lr'; known keys: rl\.algo"):
        apply_overrides({}, ["rl.lr=1"], Run)
    with pytest.raises(RLPromptError, match="--set 'seed': expected key=value"):
        apply_overrides({}, ["seed"], Run)
    with pytest.raises(RLPromptError, match="--set '=5': expected key=value"):  # not a list of every key
        apply_overrides({}, ["=5"], Run)
    with pytest.raises(RLPromptError, match="'seed' has no sub-keys"):
        apply_overrides({}, ["seed.x=1"], Run)


def test_read_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(RLPromptError, match=r"c\.yaml: not valid YAML at line \d"):
        read_yaml(bad)
    bad.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(RLPromptError, match="the top level must be a mapping"):
        read_yaml(bad)


@pytest.mark.real_model
def test_frequent_vocabulary_is_whole_single_token_words(smol, bert):
    for lm in (smol, bert):
        ids = action_vocabulary(lm, "frequent", size=500)
        assert len(ids) == len(set(ids)) == 500
        words = [lm.decode([i]).strip() for i in ids]
        assert all(w.isalpha() for w in words)
        assert {"the", "film", "good"} <= set(words)
    assert action_vocabulary(smol, "list", tokens=["great", "movie"]) == smol.encode(" great movie")
    with pytest.raises(RLPromptError, match="'magnificently' is 2 tokens"):
        action_vocabulary(smol, "list", tokens=["magnificently"])
    with pytest.raises(RLPromptError, match="vocab.kind must be"):
        action_vocabulary(smol, "rare")
    # two words but one token for an uncased model: the policy would have nothing to choose
    assert len(action_vocabulary(smol, "list", tokens=["great", "Great"])) == 2
    with pytest.raises(RLPromptError, match=r"\['great', 'Great'\] are one token for bert-tiny"):
        action_vocabulary(bert, "list", tokens=["great", "Great"])


def test_a_config_file_may_start_from_a_base_file(tmp_path):
    from rlprompt.config import load_train_config
    from rlprompt.errors import RLPromptError

    (tmp_path / "base.yaml").write_text("seeds: [0, 1]\nenv:\n  prompt_length: 3\n  num_envs: 8\n")
    (tmp_path / "mine.yaml").write_text("base: base.yaml\nenv:\n  num_envs: 4\ntask:\n  seeds: [16-13]\n")
    config = load_train_config(str(tmp_path / "mine.yaml"), ["env.prompt_length=2"])
    assert config.seeds == [0, 1]
    assert (config.task.seed, config.task.seeds) == ("16-13", [])  # a one-split list is that split
    assert (config.env.prompt_length, config.env.num_envs) == (2, 4)  # --set, then the file, then its base
    # One of something over the base's list of them means that one; so does --set over the file's list.
    (tmp_path / "one.yaml").write_text("base: base.yaml\nseed: 3\ntask: cr\n")
    config = load_train_config(str(tmp_path / "one.yaml"))
    assert (config.seed_list, config.task.name) == ([3], "cr")
    config = load_train_config(str(tmp_path / "base.yaml"), ["seed=5"])
    assert config.seed_list == [5]
    protocol = load_train_config("configs/sst2_protocol.yaml", ["task.seed=16-42"])
    assert protocol.task.seed_list == ["16-42"]
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(RLPromptError, match="loop.yaml: 'base' refers back to itself"):
        load_train_config(str(tmp_path / "loop.yaml"))
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(RLPromptError, match=r"lost.yaml: base config .*nowhere.yaml does not exist"):
        load_train_config(str(tmp_path / "lost.yaml"))


def test_overrides_written_as_a_file_over_a_base_repeat_the_overridden_run(tmp_path):
    """What a tool that writes a config from --set overrides (benchmarks/choose_demonstrations.py) relies on:
    the mapping, written under ``base:``, loads as the base with those overrides (the base's other task keys
    kept, words dropped where the task changes without its own); bad keys fail alike, and ``task=NAME``,
    which on the command line replaces the whole task section, is refused."""
    import yaml

    from rlprompt.config import load_train_config, overrides_mapping

    base = tmp_path / "base.yaml"
    base.write_text(
        "seeds: [0, 1]\ntask:\n  name: sst-2\n  seed: 16-13\n  test_examples: 100\n"
        "  verbalizers: [negative, positive]\n"
    )
    for overrides in (
        ["task.name=mr", "task.verbalizers=[bad, great]", "rl.ent_coef=0.02", "seeds=[4]", "dtype=bfloat16"],
        ["task.name=agnews", "seed=3"],
        ["task.seed=16-21", "model=gemma3-270m"],
    ):
        written = tmp_path / "written.yaml"
        written.write_text(yaml.safe_dump({"base": str(base), **overrides_mapping(overrides)}))
        assert load_train_config(str(written)) == load_train_config(str(base), overrides), overrides
    last = load_train_config(str(written))  # the base's test subsample kept under the new split
    assert (last.task.seed, last.task.test_examples, last.model) == ("16-21", 100, "gemma3-270m")
    assert overrides_mapping(["rl.ent_coef=0.02"]) == {"rl": {"ent_coef": 0.02}}
    with pytest.raises(RLPromptError, match="set task.name=mr"):
        overrides_mapping(["task=mr"])
    with pytest.raises(RLPromptError, match="expected key=value"):
        overrides_mapping(["task"])
    with pytest.raises(RLPromptError, match="unknown key 'rl.ent_coeff'; did you mean 'rl.ent_coef'"):
        overrides_mapping(["rl.ent_coeff=0.1"])


def test_label_words_stay_with_the_task_they_were_chosen_for(tmp_path):
    """A config's task.verbalizers belong to its task: naming another task (in a config that starts from it,
    or with --set) without words of its own reads that task through its own words, so the comparison config
    runs on MR or on 4-class AG News with --set task.name alone; words set alongside, or one task, stay."""
    from rlprompt.config import load_train_config

    (tmp_path / "base.yaml").write_text("task:\n  name: sst-2\n  verbalizers: [negative, positive]\n")
    assert load_train_config(str(tmp_path / "base.yaml")).task.verbalizers == ["negative", "positive"]
    for name, words in (("agnews", None), ("mr", None), ("sst-2", ["negative", "positive"])):
        assert load_train_config(str(tmp_path / "base.yaml"), [f"task.name={name}"]).task.verbalizers == words
    assert load_train_config(str(tmp_path / "base.yaml"), ["task=cr"]).task.verbalizers is None
    # words set with the new name are kept, in either order
    for sets in (
        ["task.name=mr", "task.verbalizers=[bad, good]"],
        ["task.verbalizers=[bad, good]", "task.name=mr"],
    ):
        assert load_train_config(str(tmp_path / "base.yaml"), sets).task.verbalizers == ["bad", "good"]
    (tmp_path / "mr.yaml").write_text("base: base.yaml\ntask:\n  name: mr\n")
    assert load_train_config(str(tmp_path / "mr.yaml")).task.verbalizers is None
    (tmp_path / "seed.yaml").write_text("base: base.yaml\ntask:\n  seed: 16-13\n")
    assert load_train_config(str(tmp_path / "seed.yaml")).task.verbalizers == ["negative", "positive"]
    (tmp_path / "own.yaml").write_text("base: base.yaml\ntask:\n  name: cr\n  verbalizers: [bad, good]\n")
    assert load_train_config(str(tmp_path / "own.yaml")).task.verbalizers == ["bad", "good"]


def test_the_protocol_config_is_the_comparison_on_five_splits():
    from dataclasses import replace

    from rlprompt.config import load_train_config

    compare = load_train_config("configs/sst2_compare.yaml")
    protocol = load_train_config("configs/sst2_protocol.yaml")
    splits = ["16-13", "16-21", "16-42", "16-87", "16-100"]
    assert protocol.task.seed_list == splits
    assert protocol == replace(compare, task=replace(compare.task, seeds=splits))


def test_reference_configs_pin_float32_and_the_quickstart_leaves_it_to_the_machine():
    """The configs whose figures are stored (benchmarks/results, README) repeat them on any CPU: dtype auto
    would be bf16 on CPUs with native bf16. The quickstart takes the machine's fastest (auto)."""
    from pathlib import Path

    from rlprompt.config import load_train_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("sst2_compare.yaml", "sst2_protocol.yaml", "yelp_style.yaml"):
        assert load_train_config(str(configs / name)).dtype == "float32", name
    assert load_train_config(str(configs / "quickstart.yaml")).dtype == "auto"
