"""What every method shares: the context a run gets from the driver, the result it reports (``result.json``),
the dev-evaluation log, and small helpers. Method modules import these from here, not from the package,
so the package's dispatch (:func:`rlprompt.methods.run_method`) imports them without a cycle."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rlprompt.checkpoint import StopRequest, truncate_metrics
from rlprompt.config import TrainConfig
from rlprompt.files import atomic_write_bytes
from rlprompt.models import LanguageModel
from rlprompt.scoring import LabelScorer
from rlprompt.tasks import Task

# A comparison directory's reference rows: the manual and empty prompts on test, raw and calibrated.
REFERENCES = "references.json"


@dataclass
class MethodContext:
    """What a method run gets from the driver."""

    config: TrainConfig
    seed: int
    task: Task
    lm: LanguageModel  # the frozen task LM (shared: methods that train weights work on a copy)
    run_dir: Path
    test_scorer: (
        LabelScorer  # frozen LM, task template: shared so test prefixes are computed once per process
    )
    progress: bool = True
    cache: dict = field(default_factory=dict)  # shared between runs of one process (perplexity before)
    stop: StopRequest = field(default_factory=StopRequest)  # polled: Ctrl-C or SIGTERM asks for a clean stop
    resume: dict | None = None  # the run directory's checkpoint, when resuming

    def checkpoint_due(self, step: int, last_checkpoint: int, evaluated_since: bool) -> bool:
        """Whether to write a checkpoint at ``step``: on a stop request, every ``checkpoint_every``
        steps, or (by default) after each dev evaluation."""
        every = self.config.checkpoint_every
        if self.stop.requested:
            return True
        if every is None:
            return evaluated_since
        return every > 0 and step - last_checkpoint >= every

    @property
    def manual_prompt(self) -> str:
        return self.config.manual_prompt if self.config.manual_prompt is not None else self.task.manual_prompt

    def eval_steps(self, total: int) -> list[int]:
        """The steps at which dev is evaluated: at the start and at ``evaluations`` even points."""
        n = self.config.evaluations
        return sorted({0} | {max(1, round(total * k / n)) for k in range(1, n + 1)})


@dataclass
class MethodResult:
    """What one method run reports; written as ``result.json`` and read back by the report builder."""

    method: str
    seed: int
    model: str
    task: str
    dev_accuracy: float
    test_accuracy: float
    test_macro_f1: float
    steps: int
    train_seconds: float
    lm_tokens: int  # task-LM tokens fed forward in training and dev evaluation (not test)
    trainable_params: int
    artifact: str  # path relative to the run directory
    artifact_bytes: int
    learned: str  # a short description of what was learned (the prompt text, "5 virtual tokens", ...)
    interpretable: bool
    transferable: bool
    perplexity_before: float | None = None  # general held-out text, for methods that change the model
    perplexity_after: float | None = None
    curve: list[dict] = field(default_factory=list)  # per evaluation: step, lm_tokens, dev and best dev
    interrupted: bool = False
    # What dev_accuracy and test_accuracy hold: "accuracy", or for style transfer "joint" (the joint score of
    # content and style, as a fraction; test_macro_f1 then holds J(C,S,F) as a fraction).
    metric: str = "accuracy"
    # How the run scored for choosing on dev and for dev_accuracy / test_accuracy (rlprompt.calibration);
    # the test accuracy both ways: raw, and calibrated with `calibrated_with` (the run's method, or batch).
    calibration: str = "none"
    test_accuracy_raw: float | None = None
    test_accuracy_calibrated: float | None = None
    calibrated_with: str | None = None
    # (prompt, example) pairs scored in training and dev, for the methods that query a score (rl, search,
    # manual, in_context); the budget max_reward_queries counts these.
    reward_queries: int | None = None

    def save(self, run_dir: Path) -> None:
        text = json.dumps(asdict(self), indent=2) + "\n"
        atomic_write_bytes(Path(run_dir) / "result.json", text.encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> MethodResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class EvalLog:
    """Dev evaluations of one run: ``metrics.jsonl``, the learning curve, the best so far, progress."""

    def __init__(self, run_dir: Path, total: int, desc: str, progress: bool, resume: dict | None = None):
        """``resume``: a ``state()`` from a checkpoint; the log's rows after it are dropped."""
        self.curve: list[dict] = []
        self.best_accuracy = -1.0
        self.elapsed_before = 0.0  # seconds spent before a resume
        path = Path(run_dir) / "metrics.jsonl"
        if resume is not None:
            truncate_metrics(run_dir, resume["step"])
            self.curve, self.best_accuracy = list(resume["curve"]), resume["best_accuracy"]
            self.elapsed_before = resume["elapsed"]
        else:
            path.unlink(missing_ok=True)  # a fresh start of this run: no rows from an earlier attempt
        self.file = path.open("a", encoding="utf-8")
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not progress,
                        initial=resume["step"] if resume else 0)  # fmt: skip

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def state(self, step: int) -> dict:
        """What a checkpoint at ``step`` needs to continue this log."""
        return {"step": step, "curve": list(self.curve), "best_accuracy": self.best_accuracy,
                "elapsed": self.elapsed}  # fmt: skip

    def record(self, step: int, dev_accuracy: float, lm_tokens: int, **extra) -> bool:
        """Log one dev evaluation; True when it is the best so far."""
        improved = dev_accuracy > self.best_accuracy
        self.best_accuracy = max(self.best_accuracy, dev_accuracy)
        point = {"step": step, "lm_tokens": int(lm_tokens), "dev_accuracy": float(dev_accuracy),
                 "best_dev_accuracy": float(self.best_accuracy)}  # fmt: skip
        self.curve.append(point)
        row = {**point, "seconds": round(self.elapsed, 1), **extra}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(f"dev {dev_accuracy:.3f} best {self.best_accuracy:.3f}")
        return improved

    def close(self) -> None:
        self.bar.close()
        self.file.close()


def dev_accuracy(logprobs: np.ndarray, examples) -> float:
    labels = np.array([ex.label for ex in examples])
    return float(np.mean(logprobs.argmax(-1) == labels))


def path_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


@dataclass
class TestResult:
    """A learned prompt on test: the headline score (accuracy, or the style joint score as a fraction), a
    secondary one (macro-F1; style: J(C,S,F) as a fraction), metrics for prompt.json and summary lines."""

    score: float
    secondary: float
    metrics: dict
    summary: str
