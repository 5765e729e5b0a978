"""Task-LM backends on one workload: prompt-example pairs per second, cold and warm, and how far each
backend's label log-probs are from in-process float32.

    .venv/bin/python benchmarks/backends.py [--server URL | --start-server] [--device cpu] [--out DIR]

Workload: 16 random 5-token prompts from the quickstart's action vocabulary x the 32 SST-2 training
sentences (seed 16-100), SmolLM2-135M, the default template. Rows: the in-process scorer in float32 and
in bfloat16 (and float16 on a GPU), and an OpenAI-compatible server on each of its routes (``--server``:
a running one; ``--start-server``: a local vLLM over the dequantised SmolLM2 from ``make vllm``).
Cold: a new scorer (sentence prefixes computed in the timed call; on a server, its prefix cache empty for
these prompts). Warm: the reward cache emptied, everything else kept (as in RL training, where each batch
brings new prompts for sentences seen before). Writes ``backends.md`` and ``backends.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--server", help="base URL of a running OpenAI-compatible server serving the model")
    p.add_argument("--start-server", action="store_true", help="start a local vLLM server (make vllm)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()

    import torch

    from rlprompt.backends import load_task_model
    from rlprompt.backends.vllm_launcher import vllm_server
    from rlprompt.evaluation import make_scorer
    from rlprompt.files import atomic_write_bytes
    from rlprompt.models import _resolve_directory, resolve_device
    from rlprompt.tables import markdown_table
    from rlprompt.tasks import load_task
    from rlprompt.vocab import action_vocabulary

    task = load_task("sst-2")
    examples = task.examples("train")
    device = resolve_device(args.device)
    reference_lm = load_task_model(args.model, device, "float32")
    vocab = action_vocabulary(reference_lm, "frequent", 1000)
    rng = np.random.default_rng(0)
    prompts = [tuple(int(t) for t in rng.choice(vocab, size=5)) for _ in range(args.prompts)]
    pairs = len(prompts) * len(examples)
    rows, reference = [], None

    def measure(name: str, lm, **kwargs) -> None:
        nonlocal reference
        scorer = make_scorer(lm, task, prompt_budget=8, **kwargs)
        start = time.perf_counter()
        cold = scorer.score(prompts, examples)
        cold_s = time.perf_counter() - start
        scorer._scores.clear()  # warm: the reward cache emptied, prefixes (or the server's cache) kept
        start = time.perf_counter()
        warm = scorer.score(prompts, examples)
        warm_s = time.perf_counter() - start
        if reference is None:
            reference = cold
        diff = float(np.abs(np.concatenate([cold, warm]) - np.concatenate([reference, reference])).max())
        agree = float(np.mean(cold.argmax(-1) == reference.argmax(-1)))
        rows.append({"backend": name, "cold_pairs_per_s": pairs / cold_s, "warm_pairs_per_s": pairs / warm_s,
                     "max_abs_diff_vs_fp32": diff, "same_argmax": agree})  # fmt: skip
        print(f"{name}: cold {pairs / cold_s:.1f} pairs/s, warm {pairs / warm_s:.1f} pairs/s, "
              f"max |diff| {diff:.2g}, same argmax {agree:.3f}", flush=True)  # fmt: skip

    measure(f"in-process float32 ({device})", reference_lm)
    measure(f"in-process bfloat16 ({device})", load_task_model(args.model, device, "bfloat16"))
    if device.startswith("cuda"):
        measure(f"in-process float16 ({device})", load_task_model(args.model, device, "float16"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # before the server, whose log goes there
    server = contextlib.nullcontext(args.server)
    if args.start_server:
        server = vllm_server(_resolve_directory(args.model), log=out / "vllm-bench.log")
    if args.server or args.start_server:
        with server as url:
            for route in ("label_ids", "echo"):
                lm = load_task_model(f"openai:{url}#tokenizer={args.model}&route={route}")
                measure(f"server ({route})", lm)
    cpu = torch.backends.cpu.get_cpu_capability() if device == "cpu" else torch.cuda.get_device_name()
    lines = [
        f"# Backends: {len(prompts)} prompts x {len(examples)} SST-2 sentences, {args.model} ({cpu})",
        "",
        markdown_table(
            [
                "backend",
                "cold pairs/s",
                "warm pairs/s",
                "max abs diff of label log-probs vs fp32",
                "same argmax",
            ],
            [
                [
                    r["backend"],
                    f"{r['cold_pairs_per_s']:.1f}",
                    f"{r['warm_pairs_per_s']:.1f}",
                    f"{r['max_abs_diff_vs_fp32']:.2g}",
                    f"{r['same_argmax']:.3f}",
                ]
                for r in rows
            ],
        ),  # fmt: skip
    ]
    atomic_write_bytes(out / "backends.md", ("\n".join(lines) + "\n").encode("utf-8"))
    atomic_write_bytes(out / "backends.json", (json.dumps(rows, indent=1) + "\n").encode("utf-8"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
