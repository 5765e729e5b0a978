"""Rewrite sentences with a learned style-transfer prompt:
``python -m rlprompt.rewrite --prompt-file RUN [--input FILE]``.

One sentence a line in (a file, or standard input), one rewrite a line out on stdout, in the same order;
a blank line stays blank. The rewrites are decoded as the run's test decoded them (greedy, or the best of
``style.eval_samples`` sampled rewrites by the task's reward), with the run's seed by default, so the
run's test sentences give its ``rewrites.tsv`` back. Progress goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlprompt.console import add_verbose_flag
from rlprompt.errors import ArgumentParser, RLPromptError, run_cli
from rlprompt.export import load_prompt
from rlprompt.files import read_text
from rlprompt.models import DTYPES


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlprompt.rewrite",
        description="Rewrite sentences with a style-transfer prompt a training run learned.",
    )
    p.add_argument("--prompt-file", required=True, help="a style run's prompt.json, or its run directory")
    p.add_argument("--input", help="a UTF-8 text file, one sentence a line (default: standard input)")
    p.add_argument(
        "--model", help="another causal model to rewrite with (default: the one the prompt was learned on)"
    )
    p.add_argument(
        "--samples", type=int,
        help="1: greedy; N: the best of N sampled rewrites by the task's reward (default: the run's)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="the sampling seed (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="default: %(default)s")
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prompt = load_prompt(args.prompt_file)
    if not prompt.is_rewriting:
        raise RLPromptError(
            f"{args.prompt_file}: a classification prompt ({prompt.task}); python -m rlprompt.evaluate "
            "scores it, rewrite takes style-transfer prompts"
        )
    text = read_text(Path(args.input)) if args.input else sys.stdin.read()
    sentences = [line.strip() for line in text.splitlines()]
    if not any(sentences):
        raise RLPromptError(f"{args.input or 'standard input'}: no sentences to rewrite (one a line)")
    rewrites = iter(prompt.rewrite(
        [s for s in sentences if s], model=args.model, samples=args.samples, seed=args.seed,
        device=args.device, dtype=args.dtype, progress=True,
    ))  # fmt: skip
    print("\n".join(next(rewrites) if s else "" for s in sentences))
    return 0


if __name__ == "__main__":
    run_cli(main)
