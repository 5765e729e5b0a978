"""Fail the suite when the project's own calls trigger a deprecation in a library it uses.

A plain ``filterwarnings = error`` cannot tell whose call it was: transformers warns with a stack level
that blames torch's ``Module.__call__``, and some of its deprecations are log lines (``warning_once``),
not warnings at all. So every deprecation is caught where it is issued, whether as a warning or as a log
record, and the stack is walked outward to find the caller: the first frame outside the issuing library,
torch's module-call plumbing and the standard library. If that frame is the project's code, the call is
ours and the test that made it fails. A deprecation that a library triggers inside another library
(PEFT reading a transformers property, say) is theirs to fix and is let through.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
PROJECT_DIRS = ("rlprompt", "envs", "policies", "tests", "benchmarks", "examples")
PROJECT = tuple(str(ROOT / d) + "/" for d in PROJECT_DIRS)
STDLIB = sysconfig.get_paths()["stdlib"] + "/"
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_GUARD_FILE = str(Path(__file__).resolve())


@dataclass(frozen=True)
class Offence:
    """A deprecation the project's code triggered: what was said and which of our lines called it."""

    message: str
    caller: str  # "path:line in function"

    def __str__(self) -> str:
        return f"{self.caller}: {self.message}"


offences: list[Offence] = []


def owner(filename: str) -> str:
    """Who a source file belongs to: 'project', 'stdlib', or the top-level package it is installed as."""
    if filename.startswith(PROJECT):
        return "project"
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1].split("/", 1)[0]
    if filename.startswith(STDLIB) or filename.startswith("<"):
        return "stdlib"
    return filename


def project_caller(frame: FrameType | None) -> str | None:
    """The project frame that called into the library whose code is running in ``frame``, if any."""
    issuer = owner(frame.f_code.co_filename) if frame else None
    while frame is not None:
        who = owner(frame.f_code.co_filename)
        if who in (issuer, "torch", "stdlib") and frame.f_code.co_filename != _GUARD_FILE:
            frame = frame.f_back
            continue
        if who != "project" or frame.f_code.co_filename == _GUARD_FILE:
            return None
        return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    return None


def _check(message, frame: FrameType | None) -> None:
    caller = project_caller(frame)
    if caller is not None:
        offences.append(Offence(str(message), caller))


_original_warn = warnings.warn


def _guarded_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    cls = category if category is not None else getattr(message, "__class__", UserWarning)
    if isinstance(cls, type) and issubclass(cls, DEPRECATIONS):
        _check(message, sys._getframe(1))  # the frame that issued the warning
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


class _DeprecationLogHandler(logging.Handler):
    """Library log lines that announce a deprecation (transformers' ``warning_once``)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "deprecat" not in text.lower():
            return
        frame = sys._getframe(1)
        while frame is not None and not (
            frame.f_code.co_filename == record.pathname and frame.f_lineno == record.lineno
        ):
            frame = frame.f_back
        _check(text, frame)


LOGGERS = ("transformers", "peft", "accelerate", "huggingface_hub", "stable_baselines3", "gymnasium")


def install() -> None:
    """Watch every deprecation warning and every library log line from now on (once per process)."""
    if warnings.warn is _guarded_warn:
        return
    warnings.warn = _guarded_warn
    handler = _DeprecationLogHandler(level=logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)


def take() -> list[Offence]:
    """The offences recorded since the last call."""
    found = list(offences)
    offences.clear()
    return found
