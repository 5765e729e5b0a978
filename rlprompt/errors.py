"""The project's own error type and the command-line wrapper that turns it into one clear line.

Every problem a user can cause (a bad file, key, value or model name) raises :class:`RLPromptError`
with a message that names the culprit. Entry points wrap ``main`` in :func:`run_cli`, which prints
``error: <message>`` on stderr and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_USAGE = 2


class RLPromptError(Exception):
    """A user-facing error: the message alone must tell the user what to fix."""


class ServiceUnavailable(RLPromptError):
    """The task LM's server stopped answering during a run (after its retries): nothing the user set is
    wrong, and the run continues with ``--resume`` once the server is back."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: argparse's own message (it names the flag and the value)
    without the usage block before it. Under the ``rlprompt`` command (which names the subcommand in
    ``sys.argv[0]``) usage and errors name ``rlprompt SUBCOMMAND``, not the module."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if sys.argv and sys.argv[0].startswith("rlprompt "):  # set by rlprompt.cli.run
            self.prog = sys.argv[0]

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} ({self.prog} --help lists the options)\n")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command-line ``main`` and exit with its status, reporting RLPromptError as one line.

    Library warnings and loading bars are hidden while it runs, unless ``--verbose`` is among the
    arguments or ``RLPROMPT_VERBOSE=1`` (see :mod:`rlprompt.console`)."""
    from rlprompt.console import quiet_libraries, verbose_requested

    try:
        with quiet_libraries(verbose_requested(sys.argv[1:] if argv is None else argv)):
            status = main(argv)
    except RLPromptError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
