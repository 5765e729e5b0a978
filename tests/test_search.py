"""The discrete search baseline: it improves its training reward, keeps to its reward-query budget and
exports a prompt that evaluates like RL's."""

from __future__ import annotations

import numpy as np
import pytest

from rlprompt.errors import run_cli
from rlprompt.export import load_prompt
from rlprompt.methods import MethodResult
from rlprompt.methods.search import GeneticSearch
from rlprompt.models import register_model
from rlprompt.train import main as train_main
from tests.conftest import train_cli, write_task
from tests.test_methods import ROWS


@pytest.fixture
def tiny_task(tmp_path):
    write_task(tmp_path, "tiny", ROWS, verbalizers="{0: bad, 1: good}")
    return tmp_path


def _search(tiny_task, capsys, *settings: str) -> tuple:
    return train_cli(tiny_task, capsys, "model=tiny-gpt2", "method=search", "calibration=none", *settings)


def test_children_are_new_and_the_population_keeps_the_best():
    vocab = np.arange(100, 140)
    search = GeneticSearch(vocab, length=3, population=4, crossover=0.5, tournament=2, seed=0)
    first = search.random_prompts(4)
    search.add(first, np.array([1.0, 4.0, 2.0, 3.0]))
    children = search.children()
    assert len(children) == 4 and not set(children) & set(first) and len(set(children)) == 4
    assert all(len(c) == 3 and all(100 <= t < 140 for t in c) for c in children)
    search.add(children, np.array([5.0, 0.0, 0.5, 2.5]))
    kept = sorted([1.0, 4.0, 2.0, 3.0, 5.0, 0.0, 0.5, 2.5], reverse=True)[:4]
    assert [search.scores[p] for p in search.members] == kept
    again = GeneticSearch(vocab, length=3, population=4, crossover=0.5, tournament=2, seed=0)
    assert again.random_prompts(4) == first  # seeded


def test_search_improves_its_training_reward_and_exports_its_best_dev_prompt(tiny_task, capsys, tiny_gpt2):
    register_model(tiny_gpt2)
    run_dir, records = _search(tiny_task, capsys, "total_timesteps=600", "evaluations=4",
                               "env.prompt_length=3", "search.population=8")  # fmt: skip
    rewards = [r["population_reward"] for r in records]
    assert rewards == sorted(rewards) and rewards[-1] > rewards[0] + 1.0, rewards
    result = MethodResult.load(run_dir / "result.json")
    assert result.method == "search" and result.steps == 200 and result.trainable_params == 0
    assert result.dev_score == max(r["dev_score"] for r in records)
    prompt = load_prompt(run_dir / "prompt.json")
    assert prompt.method == "search" and len(prompt.token_ids) == 3
    assert prompt.metrics["reward_queries"] == records[-1]["reward_queries"] <= 200 * 8 + 5 * 4 * 8


@pytest.mark.parametrize("budget", [300, 777])
def test_search_never_exceeds_its_reward_query_budget(budget, tiny_task, capsys, tiny_gpt2):
    register_model(tiny_gpt2)
    run_dir, records = _search(tiny_task, capsys, "total_timesteps=5000", f"max_reward_queries={budget}",
                               "env.prompt_length=3", "search.population=8")  # fmt: skip
    spent = load_prompt(run_dir / "prompt.json").metrics["reward_queries"]
    # Within budget, and stopped by it: less than one batch of 8 prompts x 8 examples plus a dev
    # evaluation (4 candidates x 8 examples) short of it.
    assert budget - (8 * 8 + 4 * 8) < spent <= budget, spent
    assert MethodResult.load(run_dir / "result.json").steps < 5000 // 3


def test_list_methods_prints_every_registered_method(capsys):
    from rlprompt.registry import METHODS

    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--list-methods"])
    out = capsys.readouterr().out.splitlines()
    assert done.value.code == 0
    assert [line.split()[0] for line in out] == list(METHODS)
    search = next(line for line in out if line.startswith("search"))
    assert "interpretable" in search and "needs label logprobs" in search
    lora = next(line for line in out if line.startswith("lora"))
    assert "opaque" in lora and "needs differentiable" in lora
