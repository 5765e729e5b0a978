"""Learn a prompt from Python, then use it: the offline default (SmolLM2-135M on SST-2) in about three
minutes on 2 CPU cores.

    .venv/bin/python examples/learn_a_prompt.py [--model M] [--task T] [--steps N] [--set key=value ...]
"""

from __future__ import annotations

import argparse

import rlprompt


def main(argv: list[str] | None = None) -> rlprompt.export.LearnedPrompt:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="sst-2")
    p.add_argument("--steps", type=int, default=2000, help="env steps (prompt tokens written)")
    p.add_argument("--set", action="append", default=[], help="any config key=value")
    p.add_argument("--run-dir", help="where the run goes (default: runs/...)")
    args = p.parse_args(argv)

    prompt = rlprompt.learn(
        model=args.model, task=args.task, total_timesteps=args.steps, evaluations=5,
        calibration="batch", overrides=args.set, run_dir=args.run_dir,
    )  # fmt: skip
    print(f"learned prompt {prompt.text!r} in {prompt.run_dir}")
    print(f"test accuracy {prompt.metrics['test_accuracy']:.3f} (batch-calibrated); raw "
          f"{prompt.metrics['test_accuracy_raw']:.3f}; the manual prompt, calibrated: "
          f"{prompt.metrics['manual_test_accuracy_calibrated']:.3f}")  # fmt: skip
    print("as text for another tool:", prompt.fill("a gorgeous , witty , seductive movie ."))
    return prompt


if __name__ == "__main__":
    main()
