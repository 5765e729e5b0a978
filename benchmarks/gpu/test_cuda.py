"""Device checks for a CUDA machine, run by ``benchmarks/gpu_check.sh`` (not collected by ``make test``:
CI machines have no GPU). Tiny models built from configs and the bert-tiny-splade bundle: nothing large
has to travel to the GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlprompt.backends.hf import Scorer
from rlprompt.models import load_model, wrap_model
from rlprompt.tasks import Example

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SENTENCES = ["a gorgeous , witty , seductive movie .", "the film is strictly routine .", "bad .", "warm ."]


def _tiny_llama(device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    bert = load_model("bert-tiny-splade", "cpu", "float32")  # its tokenizer: a real one that travels light
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(bert.tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    return wrap_model(f"tiny-llama-{device}-{dtype}", model, bert.tokenizer, "causal")


def test_auto_resolves_to_the_gpu_in_bfloat16():
    lm = load_model("bert-tiny-splade")
    assert lm.device.startswith("cuda") and lm.dtype == "bfloat16"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_label_logprobs_on_the_gpu_match_the_cpu(dtype):
    examples = [Example(f"g/{i}", s, i % 2) for i, s in enumerate(SENTENCES)]
    cpu = _tiny_llama("cpu", torch.float32)
    gpu = _tiny_llama("cuda", dtype)
    gpu.model.load_state_dict(cpu.model.state_dict())
    prompts = ["It was", "All in all"]
    want = Scorer(cpu, "{sentence} {prompt}", ["bad", "good"]).score(prompts, examples)
    got = Scorer(gpu, "{sentence} {prompt}", ["bad", "good"]).score(prompts, examples)
    np.testing.assert_allclose(got, want, atol=1e-3 if dtype == torch.float32 else 0.1)


def test_an_rl_run_on_the_gpu_checkpoints_and_records_its_device(tmp_path, capsys):
    from rlprompt.errors import run_cli
    from rlprompt.models import register_model
    from rlprompt.train import main as train_main

    register_model(_tiny_llama("cuda:0", torch.bfloat16))
    lines = "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES))
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text(lines)
    (tmp_path / "task.yaml").write_text("name: g\ntrain: train.tsv\ndev: dev.tsv\ntest: test.tsv\n"
                                        "verbalizers: {0: bad, 1: good}\n")  # fmt: skip
    name = f"tiny-llama-cuda:0-{torch.bfloat16}"
    args = ["--quiet", "--run-dir", str(tmp_path / "run"), "--set", f"model={name}", "--set", "device=cuda",
            "--set", "dtype=bfloat16", "--set", f"task.name={tmp_path / 'task.yaml'}",
            "--set", "total_timesteps=400", "--set", "evaluations=4", "--set", "env.num_envs=4",
            "--set", "rl.batch_size=20", "--set", "vocab.size=50",
            "--set", "checkpoint_every=100"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, args)
    assert done.value.code == 0, capsys.readouterr().err
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "device: cuda:0" in config and "dtype: bfloat16" in config
