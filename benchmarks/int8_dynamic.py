"""Is int8 a faster dtype that keeps accuracy? PyTorch's dynamic quantization of the task LM's linear
layers, against float32, on the same prompts and SST-2 test sentences.

    .venv/bin/python benchmarks/int8_dynamic.py [--model smollm2-135m] [--prompts 12] [--examples 400]

On a CPU without native bf16 (AVX2 only) int8 is the one format faster than float32, so it is the
candidate for ``dtype: auto`` there. Each variant quantizes some linear layers (weights per output
channel, or per tensor; activations per batch); all are scored by the same Scorer in this one process.
Reported: the time ratio against float32, how far label log-probs move, how many predicted labels
change (raw and batch-calibrated), and each prompt's calibrated accuracy.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from scorer_throughput import PROMPTS

from rlprompt.backends.hf import Scorer
from rlprompt.models import load_model
from rlprompt.tasks import load_task


def quantized(lm, which, per_channel: bool):
    """A copy of ``lm`` whose linear layers named as ``which`` accepts are int8 (dynamic quantization)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    layers = {
        name: qconfig
        for name, module in lm.model.named_modules()
        if isinstance(module, torch.nn.Linear) and which(name)
    }
    copy_ = copy.copy(lm)
    with warnings.catch_warnings():  # the eager API's deprecation notice
        warnings.simplefilter("ignore")
        copy_.model = quantize_dynamic(copy.deepcopy(lm.model), layers, dtype=torch.qint8)
    return copy_


def calibrated(scores: np.ndarray) -> np.ndarray:
    """Batch calibration: each prompt's mean label log-prob over the examples removed."""
    return scores - scores.mean(1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--examples", type=int, default=400)
    args = parser.parse_args()

    lm = load_model(args.model, "cpu", "float32")
    task = load_task("sst-2")
    examples = task.examples("test")[: args.examples]
    labels = np.array([ex.label for ex in examples])
    prompts = PROMPTS[: args.prompts]

    def score(model):
        scorer = Scorer(model, task.template_for(model.kind), task.verbalizers)
        start = time.perf_counter()
        scores = np.asarray(scorer.score(prompts, examples))
        return scores, time.perf_counter() - start

    base, base_seconds = score(lm)
    base_accuracy = (calibrated(base).argmax(-1) == labels).mean(1)
    print(f"{args.model}: {len(prompts)} prompts x {len(examples)} SST-2 test sentences, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"float32: {base_seconds:.1f} s, calibrated accuracy mean {base_accuracy.mean():.3f}")
    no_down = lambda n: "down_proj" not in n and "lm_head" not in n  # noqa: E731
    variants = [
        ("all linear layers, per tensor", lambda n: True, False),
        ("all linear layers, per channel", lambda n: True, True),
        ("all but down_proj and lm_head, per channel", no_down, True),
        ("attention only, per channel", lambda n: "self_attn" in n, True),
    ]  # fmt: skip
    for name, which, per_channel in variants:
        scores, seconds = score(quantized(lm, which, per_channel))
        moved = np.abs(scores - base)
        accuracy = (calibrated(scores).argmax(-1) == labels).mean(1)
        print(
            f"int8 {name}: {base_seconds / seconds:.2f}x float32's speed; label log-probs move "
            f"{moved.mean():.3f} nats on average (max {moved.max():.2f}); predicted labels changed: "
            f"raw {(scores.argmax(-1) != base.argmax(-1)).mean():.1%}, calibrated "
            f"{(calibrated(scores).argmax(-1) != calibrated(base).argmax(-1)).mean():.1%}; calibrated "
            f"accuracy mean {accuracy.mean():.3f} (float32 {base_accuracy.mean():.3f}), per prompt "
            f"{np.round(accuracy - base_accuracy, 3).tolist()} against float32"
        )


if __name__ == "__main__":
    main()
