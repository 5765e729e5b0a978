"""Rewrite sentences with a learned style-transfer prompt:
``python -m rlprompt.rewrite --prompt-file RUN [--input FILE]``.

One sentence a line in (a file, or standard input), one rewrite a line out on stdout, in the same order;
a blank line stays blank. The rewrites are decoded as the run's test decoded them (greedy, or the best of
``style.eval_samples`` sampled rewrites by the task's reward), with the run's seed by default, so the
run's test sentences, in order, give its ``rewrites.tsv`` back. Sampling draws for 64 sentences (non-blank
lines) at a time, seeded by their position, so a sampled rewrite depends on the sentences before it.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from rlprompt.console import add_verbose_flag
from rlprompt.errors import ArgumentParser, RLPromptError, run_cli
from rlprompt.export import load_prompt
from rlprompt.files import decode_text
from rlprompt.models import DTYPES

_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines() splits


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"1 or more, not {value}")
    return value


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlprompt.rewrite",
        description="Rewrite sentences with a style-transfer prompt a training run learned.",
    )
    p.add_argument("--prompt-file", required=True, help="a style run's prompt.json, or its run directory")
    p.add_argument("--input", help="a UTF-8 text file, one sentence a line (default, or '-': standard input)")
    p.add_argument(
        "--model", help="another causal model to rewrite with (default: the one the prompt was learned on)"
    )
    p.add_argument(
        "--samples", type=_count,
        help="1: greedy; N: the best of N sampled rewrites by the task's reward (default: the run's)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="the sampling seed (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="default: %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_flag(p)
    return p


def _read_lines(name: str | None) -> list[str]:
    """The input's lines, split at line breaks (\\n, \\r\\n or \\r) only: other separators (a form feed, say)
    stay in their sentence."""
    if name is not None and not name.strip():
        raise RLPromptError("--input is empty: name a text file, or leave it out for standard input")
    where = "standard input" if name in (None, "-") else name
    try:
        if name in (None, "-"):
            if sys.stdin is None or sys.stdin.closed:
                raise RLPromptError("no standard input to read: give --input FILE")
            data = sys.stdin.buffer.read()
        elif Path(name).is_dir():
            raise RLPromptError(f"{name}: a directory, not a text file")
        else:
            data = Path(name).read_bytes()  # (a pipe or /dev/stdin too)
    except FileNotFoundError:
        raise RLPromptError(f"{name}: file not found") from None
    except OSError as err:
        raise RLPromptError(f"{where}: cannot read ({err.strerror or err})") from None
    lines = decode_text(data, where).split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prompt = load_prompt(args.prompt_file)
    if not prompt.is_rewriting:
        raise RLPromptError(
            f"{args.prompt_file}: a classification prompt ({prompt.task}); python -m rlprompt.evaluate "
            "scores it, rewrite takes style-transfer prompts"
        )
    sentences = [line.strip() for line in _read_lines(args.input)]
    if not any(sentences):
        raise RLPromptError(f"{args.input or 'standard input'}: no sentences to rewrite (one a line)")
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise RLPromptError(f"--seed: a whole number from 0 to 2**31 - 1, not {args.seed}")
    rewrites = iter(prompt.rewrite(
        [s for s in sentences if s], model=args.model, samples=args.samples, seed=args.seed,
        device=args.device, dtype=args.dtype, progress=not args.quiet,
    ))  # fmt: skip
    # One line each, whatever the model wrote (a rewrite is cut at its first "\n" already)
    out = ["" if not s else _LINE_BREAKS.sub(" ", next(rewrites)) for s in sentences]
    try:
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    run_cli(main)
