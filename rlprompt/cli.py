"""The ``rlprompt`` command: ``rlprompt train|evaluate|transfer|rewrite|report ...``.

Each subcommand is the module of the same name (``python -m rlprompt.train`` keeps working) with the same
options; ``rlprompt SUBCOMMAND --help`` shows them.
"""

from __future__ import annotations

import importlib
import sys

from rlprompt.errors import EXIT_USAGE, run_cli
from rlprompt.version import __version__

SUBCOMMANDS = {
    "train": "learn a prompt (or run a comparison) from a YAML config",
    "evaluate": "evaluate prompts, exported prompt files or adapters on a task",
    "transfer": "evaluate learned prompts on other models and tasks",
    "rewrite": "rewrite sentences with a learned style-transfer prompt",
    "report": "rebuild a comparison report from run directories",
}


def usage() -> str:
    lines = ["usage: rlprompt SUBCOMMAND [options]   (rlprompt SUBCOMMAND --help for its options)", "",
             "Discrete prompt optimisation for frozen language models with reinforcement learning.", "",
             "subcommands:"]  # fmt: skip
    lines += [f"  {name:<10} {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Entry point of the ``rlprompt`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if args else EXIT_USAGE)
    if args[0] == "--version":
        print(f"rlprompt {__version__}")
        sys.exit(0)
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {command!r}; choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr
        )
        sys.exit(EXIT_USAGE)
    module = importlib.import_module(f"rlprompt.{command}")
    sys.argv[0] = f"rlprompt {command}"
    run_cli(module.main, rest)


if __name__ == "__main__":
    run()
