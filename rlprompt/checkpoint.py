"""Checkpoints, resume and graceful stops.

A run writes ``checkpoint.pt`` into its run directory at its dev evaluations (or every
``checkpoint_every`` steps), when it is asked to stop (Ctrl-C or SIGTERM) and once training is over
(``finished``: a resume goes straight to the test evaluation): the trainable weights, the
optimizer state, the step counters, the random-number states of Python, NumPy and torch and what the
method tracks (the best prompt or checkpoint so far and its scores, the learning curve). The file is
written to a temporary name and renamed, so a run killed at any moment leaves either the old checkpoint or
the new one, never half of one. ``python -m rlprompt.train --resume RUN_DIR`` continues from it; the
rows of ``metrics.jsonl`` written after the checkpoint are dropped, so the resumed log has each
evaluation exactly once.
"""

from __future__ import annotations

import io
import json
import random
import signal
from pathlib import Path

import numpy as np
import torch

from rlprompt.errors import RLPromptError
from rlprompt.files import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Save ``state`` (tensors, arrays and plain values) with the global RNG states, atomically."""
    buffer = io.BytesIO()
    torch.save({**state, "rng": rng_state()}, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint of a run directory (None when it has none); a broken file is a clear error."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise RLPromptError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not {"method", "step"} <= state.keys():
        raise RLPromptError(f"{path}: not an rlprompt checkpoint (no 'method' and 'step')")
    return state


def remove_checkpoint(run_dir: Path) -> None:
    (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)


class NonFiniteError(RLPromptError):
    """A reward, loss or weight became NaN or infinite: the run stops, keeping its last checkpoint."""


def check_finite(value, what: str, step: int, run_dir: Path, last_checkpoint: int | None, hint: str) -> None:
    """Raise :class:`NonFiniteError` naming the step and the checkpoint to go back to, unless every number
    in ``value`` (a float, an array or a tensor) is finite."""
    if isinstance(value, torch.Tensor):
        finite = bool(torch.isfinite(value).all())
    else:
        finite = bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
    if not finite:
        raise non_finite(what, step, run_dir, last_checkpoint, hint)


def overflowed(err: RuntimeError) -> bool:
    """Whether torch refused a value too large for a tensor's dtype: an optimizer step with a learning rate
    like 1e38 ends so, before any weight is non-finite for :func:`check_finite` to see."""
    return "overflow" in str(err)


def non_finite(what: str, step: int, run_dir: Path, last_checkpoint: int | None, hint: str) -> NonFiniteError:
    saved = (
        f"its last checkpoint (step {last_checkpoint}) is in {run_dir}"
        if last_checkpoint and (Path(run_dir) / CHECKPOINT).exists()
        else "no checkpoint was written before it"
    )
    return NonFiniteError(
        f"{what} is not finite at step {step}: stopped; {saved}. {hint} "
        f"(python -m rlprompt.train --resume {run_dir} --set KEY=VALUE resumes with a new learning rate)"
    )


def parameters_sum(parameters) -> torch.Tensor:
    """The sum of the trainable ``parameters``: finite exactly when all of them are (up to overflow)."""
    return torch.as_tensor(sum(p.detach().double().sum() for p in parameters if p.requires_grad))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # PPO samples actions on the GPU when there is one
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only the ``metrics.jsonl`` rows up to ``last_step`` (those the checkpoint knows about)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a kill: nothing after it was written either
        if row.get("step", 0) <= last_step:
            kept.append(line)
    atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))


class StopAtOnce(KeyboardInterrupt):
    """The second Ctrl-C or SIGTERM: the run ends where it is, with no test evaluation. Training loops
    catch KeyboardInterrupt to stop cleanly and must let this one through."""


class StopRequest:
    """Turns the first Ctrl-C or SIGTERM into a request that training loops poll (``requested``), so a
    run stops at a clean point with a checkpoint; a second signal of either kind interrupts at once
    (schedulers often send SIGTERM twice before SIGKILL, and a graceful stop can take minutes)."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise StopAtOnce
        self.requested = True
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        # (a run whose training is over finishes its test evaluation first: there is nothing to checkpoint)
        print(f"\n{name}: stopping at the next clean point, with a checkpoint if training is still running "
              "(again: at once)", flush=True)  # fmt: skip

    def reclaim(self) -> None:
        """Install the handlers again, over any a library put in their place since (Ray's ``init``)."""
        for sig in self._previous:
            signal.signal(sig, self._handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
