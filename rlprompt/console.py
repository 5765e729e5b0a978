"""A quiet console for the command-line tools: the project's own progress bar and messages, nothing else.

Libraries print warnings, deprecation notices and loading bars that tell a user nothing they can act on.
:func:`quiet_libraries` hides them for the duration of a command: Python warnings not raised by rlprompt
itself, the library loggers' console output below ERROR, and the transformers / huggingface_hub progress
bars. ``--verbose`` on any command, or ``RLPROMPT_VERBOSE=1`` in the environment, shows them again.

Nothing is removed from the loggers themselves (only their console handlers are raised to ERROR), so
a handler that a caller attaches still sees every record; the previous state is restored on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

VERBOSE_ENV = "RLPROMPT_VERBOSE"
LIBRARY_LOGGERS = (
    "transformers", "peft", "accelerate", "huggingface_hub", "stable_baselines3", "gymnasium", "gguf",
    "torch", "sacrebleu", "matplotlib", "PIL",
)  # fmt: skip


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show library warnings and loading bars (also: {VERBOSE_ENV}=1)",
    )


def verbose_requested(argv: list[str] | None) -> bool:
    """``--verbose`` among the arguments, or ``RLPROMPT_VERBOSE`` set to anything but 0/empty."""
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return True
    return argv is not None and "--verbose" in argv


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Hide library warnings, log lines below ERROR and progress bars inside the block (unless verbose)."""
    if verbose:
        yield
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its fork warning, for SB3's subprocesses
    bars = _ProgressBars()
    bars.disable()  # this also sets up transformers' console handler, so it is raised below
    raised: list[tuple[logging.Handler, int]] = []
    for name in LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.level < logging.ERROR:
                raised.append((handler, handler.level))
                handler.setLevel(logging.ERROR)
    last_resort = logging.lastResort
    # Records of loggers without a handler of their own reach the console through the last resort.
    logging.lastResort = logging.StreamHandler()
    logging.lastResort.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"rlprompt(\.|$)")
            yield
    finally:
        logging.lastResort = last_resort
        for handler, level in raised:
            handler.setLevel(level)
        bars.restore()


class _ProgressBars:
    """The transformers and huggingface_hub progress bars off, then back as they were."""

    def disable(self) -> None:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as hf_logging

        self.transformers = hf_logging.is_progress_bar_enabled()
        self.hub = not hub_utils.are_progress_bars_disabled()
        hf_logging.get_logger("transformers")  # configures the library's logger and its console handler
        hf_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()

    def restore(self) -> None:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as hf_logging

        if self.transformers:
            hf_logging.enable_progress_bar()
        if self.hub:
            hub_utils.enable_progress_bars()
