"""Black-box tuning: CMA-ES lowers the training loss with forward passes only, keeps to its budget and
exports a PEFT soft prompt that evaluates to the accuracy the run reported."""

from __future__ import annotations

import json

import pytest
import torch

from rlprompt.errors import run_cli
from rlprompt.evaluate import main as evaluate_main
from rlprompt.methods import MethodResult
from rlprompt.models import register_model
from tests.conftest import train_cli, write_task
from tests.test_methods import ROWS


@pytest.fixture
def tiny_task(tmp_path):
    write_task(tmp_path, "tiny", ROWS, verbalizers="{0: bad, 1: good}")
    return tmp_path


def _bbt(tiny_task, capsys, *settings: str) -> tuple:
    return train_cli(tiny_task, capsys, "model=tiny-llama", "method=bbt", "bbt.intrinsic_dim=50",
                     "bbt.population=10", *settings)  # fmt: skip


@pytest.mark.real_model
def test_bbt_lowers_its_training_loss_without_a_backward_pass(tiny_task, capsys, smol, monkeypatch):
    # A real model: a random tiny one's class probabilities barely depend on a prompt.

    def no_backward(*args, **kwargs):
        raise AssertionError("black-box tuning ran a backward pass")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    run_dir, records = _bbt(tiny_task, capsys, "model=smollm2-135m", "total_timesteps=1000", "evaluations=4",
                            "calibration=none")  # fmt: skip
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < losses[0] * 0.8, losses
    result = MethodResult.load(run_dir / "result.json")
    assert result.method == "bbt" and result.steps == 200 and result.trainable_params == 50
    assert result.perplexity_before is not None and result.perplexity_after is not None
    # The export is a PEFT prompt-tuning adapter that evaluates to what the run reported.
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(smol.model, run_dir / "bbt")
    assert loaded.prompt_encoder["default"].embedding.weight.shape == (5, smol.model.config.hidden_size)
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--adapter", str(run_dir / "bbt"), "--json"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    (evaluated,) = json.loads(out)["results"]
    assert evaluated["accuracy"] == pytest.approx(result.test_score)


@pytest.mark.parametrize("calibration", ["none", "batch"])
def test_bbt_never_exceeds_its_reward_query_budget(calibration, tiny_task, capsys, tiny_llama):
    register_model(tiny_llama)
    budget = 900
    run_dir, records = _bbt(tiny_task, capsys, "total_timesteps=50000", f"max_reward_queries={budget}",
                            f"calibration={calibration}")  # fmt: skip
    result = MethodResult.load(run_dir / "result.json")
    # Within budget, and stopped by it: less than a generation (10 x 8 pairs) plus an evaluation short.
    assert budget - (10 * 8 + 8 + 2 * 24) < result.reward_queries <= budget, result.reward_queries
    assert result.steps % 10 == 0 and result.steps < 10000


def test_cma_state_puts_back_the_exact_search_where_a_pickle_would_not():
    """A resumed BBT run samples what the unbroken one would: the covariance and the sampler's state come
    back exactly. cmaes's own pickle drops the sampler's state (and keeps one triangle of the covariance,
    whose last bits can turn the eigenvectors), so its next population differs: why ``cma_state`` exists."""
    import io
    import pickle

    import numpy as np
    from cmaes import CMA

    from rlprompt.methods.bbt import cma_state, restore_cma

    def fresh():
        return CMA(mean=np.zeros(30), sigma=1.0, population_size=8, seed=3)

    def generation(optimizer):
        xs = [optimizer.ask() for _ in range(optimizer.population_size)]
        optimizer.tell([(x, float(np.sum((x - 1.0) ** 2))) for x in xs])
        return np.stack(xs)

    unbroken = fresh()
    for _ in range(3):
        generation(unbroken)
    buffer = io.BytesIO()
    torch.save(cma_state(unbroken), buffer)  # as the checkpoint stores it
    buffer.seek(0)
    resumed = fresh()
    restore_cma(resumed, torch.load(buffer, weights_only=False))
    pickled = pickle.loads(pickle.dumps(unbroken))  # its sampler starts from fresh OS entropy
    expected = [generation(unbroken) for _ in range(4)]
    assert all(np.array_equal(generation(resumed), x) for x in expected)
    assert not np.allclose(generation(pickled), expected[0])
