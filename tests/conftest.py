"""Shared fixtures: real offline bundles (small) and tiny random models built from configs.

Tiny models reuse a real tokenizer so texts tokenize as they would in use. The GPT-2 one has learned
absolute position embeddings: a wrong position id under padding changes its output, where a RoPE model
(Llama) would hide a constant shift.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from rlprompt.models import LanguageModel, load_model, wrap_model
from rlprompt.tasks import Example
from rlprompt.templates import TemplateEncoder
from tests import deprecation_guard

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

deprecation_guard.install()

# dtype auto means float32 in every test, on every CPU: bf16 on CPUs that have it natively would move
# scores (tests compare them with tolerances set for float32, e.g. against a float32 vLLM server). Set
# here, before any model loads, so the CLIs the tests start as subprocesses inherit it.
os.environ["RLPROMPT_CPU_BF16"] = "0"


@pytest.fixture(scope="session", autouse=True)
def library_scratch_in_one_temp_dir():
    """Libraries' own scratch, in one short directory removed after the session: an SB3 model built without
    ``tensorboard_log`` (as tests build them) makes an empty ``SB3-<date>`` directory on every ``learn``, and
    each local Ray instance keeps a session directory (short path: Ray's socket paths have a length limit).
    Set in the environment, so the CLIs the tests start as subprocesses inherit it."""
    scratch = Path(tempfile.mkdtemp(prefix="rlp-"))
    saved = {key: os.environ.get(key) for key in ("SB3_LOGDIR", "RAY_TMPDIR")}
    os.environ["SB3_LOGDIR"], os.environ["RAY_TMPDIR"] = str(scratch / "sb3"), str(scratch / "ray")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_deprecated_calls_of_ours():
    """Fail a test whose code (or the project code it runs) calls a deprecated library API."""
    deprecation_guard.take()
    yield
    found = deprecation_guard.take()
    if found:
        pytest.fail("deprecated library calls made by the project:\n" + "\n".join(map(str, found)))


@pytest.fixture(scope="session")
def smol() -> LanguageModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def bert() -> LanguageModel:
    return load_model("bert-tiny-splade")


def _tiny_gpt2(name: str, tokenizer, seed: int, n_positions: int, attention: str) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        attn_implementation=attention,
    )  # fmt: skip
    return wrap_model(name, GPT2LMHeadModel(config), tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2(smol) -> LanguageModel:
    return _tiny_gpt2("tiny-gpt2", smol.tokenizer, seed=0, n_positions=64, attention="sdpa")


@pytest.fixture(scope="session")
def tiny_gpt2_eager(smol) -> LanguageModel:
    return _tiny_gpt2("tiny-gpt2-eager", smol.tokenizer, seed=1, n_positions=128, attention="eager")


@pytest.fixture(scope="session")
def tiny_llama(smol) -> LanguageModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=len(smol.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    return wrap_model("tiny-llama", LlamaForCausalLM(config), smol.tokenizer)


@pytest.fixture(scope="session")
def tiny_bert(bert) -> LanguageModel:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=bert.tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return wrap_model("tiny-bert", BertForMaskedLM(config), bert.tokenizer)


SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine .",
    "it 's a charming and often affecting journey , and one that rewards patience with a quietly moving "
    "final act that stays with you long after the credits roll .",
    "bad .",
    "an utterly incompetent , overlong mess of a movie that nobody should sit through .",
]


@pytest.fixture
def examples() -> list[Example]:
    return [Example(uid=f"t/{i}", text=s, label=i % 2) for i, s in enumerate(SENTENCES)]


def reference_logprobs(
    encoder: TemplateEncoder, prompt_ids: tuple[int, ...], example: Example
) -> list[float]:
    """Label log-probs from plain, unbatched, unpadded full forward passes (no caches)."""
    lm = encoder.lm
    enc = encoder.encode_example(example.text)
    seq = list(enc.head) + list(prompt_ids) + list(enc.tail)
    with torch.no_grad():
        if lm.kind == "masked":
            logits = lm.model(input_ids=torch.tensor([seq])).logits[0]
            pos = enc.label_in_head if enc.label_in_head is not None else len(seq) - enc.label_from_end
            lp = torch.log_softmax(logits[pos], -1)
            return [lp[ids[0]].item() for ids in encoder.verbalizer_ids]
        out = []
        for ids in encoder.verbalizer_ids:
            full = seq + list(ids)
            lp = torch.log_softmax(lm.model(input_ids=torch.tensor([full])).logits[0], -1)
            out.append(sum(lp[len(seq) - 1 + j, t].item() for j, t in enumerate(ids)))
        return out


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` loaded as a module (the scripts import their siblings, e.g. finished_runs,
    as top-level modules, so the folder is on the path while it loads)."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))


def write_task(directory: Path, name: str, rows, verbalizers: str = "{0: terrible, 1: great}") -> Path:
    """A user task whose train, dev and test files all hold ``rows`` ((sentence, label) pairs); returns
    its task.yaml."""
    lines = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
    for split in ("train", "dev", "test"):
        (directory / f"{split}.tsv").write_text(lines, encoding="utf-8")
    spec = f"name: {name}\ntrain: train.tsv\ndev: dev.tsv\ntest: test.tsv\nverbalizers: {verbalizers}\n"
    (directory / "task.yaml").write_text(spec, encoding="utf-8")
    return directory / "task.yaml"


def train_cli(task_dir: Path, capsys, *settings: str, expect: int = 0) -> tuple[Path | None, list[dict]]:
    """``python -m rlprompt.train --quiet`` on the task in ``task_dir`` (written by :func:`write_task` as
    ``task.yaml``), runs under ``task_dir/runs``, each setting a ``--set``; asserts the exit code and
    returns the run directory (None when it failed) and its ``metrics.jsonl`` rows."""
    import json

    from rlprompt.errors import run_cli
    from rlprompt.train import main

    argv = ["--quiet", "--set", f"task.name={task_dir / 'task.yaml'}",
            "--set", f"output_dir={task_dir / 'runs'}", "--set", "heldout_sentences=4"]  # fmt: skip
    for setting in settings:
        argv += ["--set", setting]
    with pytest.raises(SystemExit) as done:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert done.value.code == expect, err
    if expect != 0:
        return None, []
    runs = sorted((task_dir / "runs").iterdir())
    assert len(runs) == 1, runs
    metrics = runs[0] / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    return runs[0], rows


def send_json(handler, payload) -> None:
    """Answer an ``http.server`` request with ``payload`` as JSON (the stand-in servers of the server
    tests)."""
    import json

    body = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
