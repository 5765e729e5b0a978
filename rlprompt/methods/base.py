"""What every method shares: the context a run gets from the driver, the result it reports (``result.json``),
the dev-evaluation log, and small helpers. Method modules import these from here, not from the package,
so the package's dispatch (:func:`rlprompt.methods.run_method`) imports them without a cycle."""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from rlprompt.checkpoint import StopRequest, truncate_metrics
from rlprompt.export import LearnedPrompt, recorded_model_name, save_prompt
from rlprompt.files import atomic_write_bytes
from rlprompt.models import LanguageModel
from rlprompt.registry import DEFAULT_KIND, TASK_KINDS, TaskKindSpec
from rlprompt.scoring import LabelScorer
from rlprompt.tasks import Task
from rlprompt.version import __version__

# Which of a run's top prompts is its chosen one (rl.prompt_rule, search.prompt_rule; :func:`chosen_prompt`)
PromptRule = Literal["dev_accuracy", "top_3_dev_reward"]

# A comparison directory's reference rows: the manual and empty prompts on test, raw and calibrated.
REFERENCES = "references.json"


@dataclass
class MethodContext:
    """What a method run gets from the driver."""

    config: Any  # rlprompt.config.TrainConfig (not imported: config reads the method modules)
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
    kind: TaskKindSpec = field(default_factory=lambda: TASK_KINDS[DEFAULT_KIND])  # what the task asks for

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
        return self.config.manual_prompt_for(self.task)

    @property
    def train_examples(self) -> list:
        """The training examples the method learns from: the training split less ``task.exclude_train``."""
        return self.task.training_examples(self.config.task.exclude_train)

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
    dev_score: float  # the primary metric (``metric``) on dev of the chosen prompt or checkpoint
    # The task kind's metrics on test (rlprompt.registry.TASK_KINDS): classification: accuracy and macro_f1
    # as the run scored (raw or calibrated), and accuracy_raw and accuracy_calibrated both ways; style
    # transfer: joint and j_csf (J(C,S,F)), as fractions.
    test_metrics: dict[str, float]
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
    metric: str = "accuracy"  # the task kind's primary metric: what dev_score and test_score hold
    # How the run scored for choosing on dev and for the headline test metrics (rlprompt.calibration); the
    # test accuracy is also given both ways, calibrated with `calibrated_with` (the run's method, or batch).
    calibration: str = "none"
    calibrated_with: str | None = None
    # (prompt, example) pairs scored in training and dev, for the methods that query a score (rl, search,
    # manual, in_context); the budget max_reward_queries counts these.
    reward_queries: int | None = None
    # The few-shot data split (built-in tasks' task.seed, e.g. "16-100") the run trained and chose on.
    data_seed: str | None = None
    # Classification: per test example in the test set's order, "1" where the headline prediction is right
    # (the report's paired differences between methods on the same split and seed).
    test_correct: str | None = None
    # rl and search: the mean primary test metric of the top_k_report best prompts by dev, and how many
    # there were ...
    test_top_k: float | None = None
    top_k: int | None = None
    # ... and of the first 3 of them (RLPrompt's figure, whatever top_k_report is; fewer where fewer
    # reached dev)
    test_top_3: float | None = None
    # ... and the accuracy of their ensemble (each test input's class: the argmax of their mean label
    # probabilities, calibrated as the run scores)
    test_ensemble: float | None = None
    # An ensemble's run (config `ensemble` > 1): the chosen prompt's own test score (test_score is the
    # ensemble's)
    test_chosen: float | None = None

    @property
    def test_score(self) -> float:
        """The primary metric on test, as the run scored."""
        return self.test_metrics[self.metric]

    def test_metric(self, name: str) -> float | None:
        return self.test_metrics.get(name)

    def save(self, run_dir: Path) -> None:
        text = json.dumps(asdict(self), indent=2) + "\n"
        atomic_write_bytes(Path(run_dir) / "result.json", text.encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> MethodResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object expected, got {type(data).__name__}")
        data = _upgraded(data)
        fields = cls.__dataclass_fields__
        required = [k for k, f in fields.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:  # (a hand-edited or foreign file: say which field, not the constructor's complaint)
            raise ValueError(f"no {missing[0]!r} field")
        return cls(**{k: v for k, v in data.items() if k in fields})


def _upgraded(data: dict) -> dict:
    """A result.json written before the metrics mapping (its dev_accuracy, test_accuracy and test_macro_f1
    held the kind's primary and secondary metric) in today's fields, so a comparison started by an earlier
    version still resumes and reports."""
    if "test_metrics" in data or "test_accuracy" not in data:
        return data
    data = dict(data)
    primary = data.get("metric", "accuracy")
    secondary = "macro_f1" if primary == "accuracy" else "j_csf"
    data["dev_score"] = data.pop("dev_accuracy")
    metrics = {primary: data.pop("test_accuracy"), secondary: data.pop("test_macro_f1", None)}
    for old, new in (
        ("test_accuracy_raw", "accuracy_raw"),
        ("test_accuracy_calibrated", "accuracy_calibrated"),
    ):
        if data.get(old) is not None:
            metrics[new] = data[old]
        data.pop(old, None)
    data["test_metrics"] = {k: v for k, v in metrics.items() if v is not None}
    data["curve"] = [_curve_point(p) for p in data.get("curve", [])]
    return data


def _curve_point(point: dict) -> dict:
    renamed = {"dev_accuracy": "dev_score", "best_dev_accuracy": "best_dev_score"}
    return {renamed.get(k, k): v for k, v in point.items()}


def classification_metrics_of(result, calibrated: bool) -> dict[str, float]:
    """``MethodResult.test_metrics`` of a classification run from its test :class:`PromptResult`: the
    headline as the run scored (calibrated or raw), and the accuracy both ways."""
    headline = result.scored(calibrated)
    return {"accuracy": headline.accuracy, "macro_f1": headline.macro_f1,
            "accuracy_raw": result.raw.accuracy, "accuracy_calibrated": result.metrics.accuracy}  # fmt: skip


def classification_correct_of(result, calibrated: bool) -> str:
    """``MethodResult.test_correct`` of a classification run: per test example, whether the headline
    prediction (calibrated or raw, as the run scored) is right."""
    return result.scored(calibrated).correct


class EvalLog:
    """Dev evaluations of one run: ``metrics.jsonl``, the learning curve, the best so far, progress."""

    def __init__(self, run_dir: Path, total: int, desc: str, progress: bool, resume: dict | None = None):
        """``resume``: a ``state()`` from a checkpoint; the log's rows after it are dropped."""
        self.curve: list[dict] = []
        self.best_score = -1.0
        self.elapsed_before = 0.0  # seconds spent before a resume
        path = Path(run_dir) / "metrics.jsonl"
        if resume is not None:
            truncate_metrics(run_dir, resume["step"])
            self.curve = [_curve_point(p) for p in resume["curve"]]  # (older checkpoints: old names)
            self.best_score = resume.get("best_score", resume.get("best_accuracy"))
            self.elapsed_before = resume["elapsed"]
        else:
            path.unlink(missing_ok=True)  # a fresh start of this run: no rows from an earlier attempt
        self.file = path.open("a", encoding="utf-8")
        self.started = time.perf_counter()
        # no bar for a method with no training steps (manual, in-context): it would only show "0step"
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not progress or not total,
                        initial=resume["step"] if resume else 0)  # fmt: skip

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def state(self, step: int) -> dict:
        """What a checkpoint at ``step`` needs to continue this log."""
        return {"step": step, "curve": list(self.curve), "best_score": self.best_score,
                "elapsed": self.elapsed}  # fmt: skip

    def evaluated_since(self, step: int) -> bool:
        """Whether a dev evaluation was logged after ``step`` (a checkpoint's, say)."""
        return bool(self.curve) and self.curve[-1]["step"] > step

    def record(self, step: int, dev_score: float, lm_tokens: int, **extra) -> bool:
        """Log one dev evaluation (the task kind's primary metric); True when it is the best so far."""
        improved = dev_score > self.best_score
        self.best_score = max(self.best_score, dev_score)
        point = {"step": step, "lm_tokens": int(lm_tokens), "dev_score": float(dev_score),
                 "best_dev_score": float(self.best_score)}  # fmt: skip
        self.curve.append(point)
        row = {**point, "seconds": round(self.elapsed, 1), **extra}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(f"dev {dev_score:.3f} best {self.best_score:.3f}")
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
class Candidate:
    """A prompt with its dev scores; compared by the primary metric (classification: accuracy), then by a
    less noisy tie-breaker (the gap reward)."""

    ids: tuple[int, ...]
    text: str
    dev_score: float
    dev_reward: float
    step: int

    @property
    def key(self) -> tuple[float, float]:
        return (self.dev_score, self.dev_reward)

    @classmethod
    def from_state(cls, state: dict) -> Candidate:
        """A candidate back from its ``asdict`` in a checkpoint (the ids come back as a list)."""
        return cls(**{**state, "ids": tuple(state["ids"])})


class TopCandidates:
    """The ``k`` best distinct prompts seen on dev (by :attr:`Candidate.key`), best first."""

    def __init__(self, k: int, items: list[dict] = ()):
        self.k = k
        self.items: list[Candidate] = [Candidate.from_state(c) for c in items]

    def add(self, candidates: list[Candidate]) -> None:
        known = {c.ids: c for c in self.items}
        for cand in candidates:
            if cand.ids not in known or cand.key > known[cand.ids].key:
                known[cand.ids] = cand
        self.items = sorted(known.values(), key=lambda c: c.key, reverse=True)[: self.k]

    def state(self) -> list[dict]:
        return [asdict(c) for c in self.items]


@dataclass
class TopK:
    """The top-k prompts' test figure: their mean primary test metric, their number and each one's score
    (None where the objective has no such figure)."""

    mean: float | None = None
    k: int | None = None
    scores: list[float] | None = None
    ensembles: dict[int, float] | None = None  # k -> accuracy of the first k prompts' ensemble

    @property
    def ensemble(self) -> float | None:
        """The accuracy of all k prompts' ensemble."""
        return (self.ensembles or {}).get(self.k)

    @property
    def top_3_mean(self) -> float | None:
        """RLPrompt's figure: the mean score of the 3 best prompts by dev (of all, where fewer)."""
        return float(np.mean(self.scores[:3])) if self.scores else None


def top_k_prompts(objective, top: TopCandidates, test_scores: list[float] | None = None) -> list[dict]:
    """The top prompts for ``prompt.json``: text, the task LM's token ids, dev score, dev reward and,
    where measured, test score."""
    scores = test_scores or [None] * len(top.items)
    return [{"text": c.text, "token_ids": list(objective.task_token_ids(c.ids)), "dev": c.dev_score,
             "dev_reward": c.dev_reward, **({"test": s} if s is not None else {})}
            for c, s in zip(top.items, scores, strict=True)]  # fmt: skip


def top_k_metrics(objective, top: TopCandidates, top_k: TopK) -> dict:
    """What ``prompt.json``'s metrics record of the top-k figure (``top_k``: :func:`top_k_score`'s answer);
    nothing where there is none."""
    if top_k.k is None:
        return {}
    ensembles = {f"test_ensemble_top_{k}": v for k, v in (top_k.ensembles or {}).items()}
    return {"test_top_k_mean": top_k.mean, "test_top_3_mean": top_k.top_3_mean, **ensembles,
            "top_k_prompts": top_k_prompts(objective, top, top_k.scores)}  # fmt: skip


def ensemble_fields(objective, best: Candidate, members: list[Candidate]) -> dict:
    """``LearnedPrompt.ensemble`` for an ensemble's prompt file (nothing for one prompt)."""
    if not members:
        return {}
    return {"ensemble": [{"text": c.text, "token_ids": list(objective.task_token_ids(c.ids))}
                         for c in (best, *members)]}  # fmt: skip


def chosen_test_score(top: TopCandidates, top_k: TopK, best: Candidate, members: list[Candidate]):
    """``MethodResult.test_chosen``: the chosen prompt's own test score when the artifact is an ensemble."""
    if not members or not top_k.scores:
        return None
    return next(s for c, s in zip(top.items, top_k.scores, strict=True) if c.ids == best.ids)


def chosen_prompt(rule: PromptRule, top: TopCandidates, best: Candidate) -> Candidate:
    """The run's chosen prompt by the method's ``prompt_rule``: ``best`` (dev accuracy, then the dev reward),
    or (``top_3_dev_reward``) of the first 3 of ``top`` (RLPrompt's top 3 by dev, however many the run
    keeps for its report), the one with the highest dev reward, the better by dev accuracy of two that
    tie."""
    if rule == "top_3_dev_reward" and top.items:
        return max(top.items[:3], key=lambda c: c.dev_reward)  # max keeps the first of equals: top is by dev
    return best


class DevChoice:
    """What a prompt method (rl, search) has seen on dev: the best prompt (by :attr:`Candidate.key`), the
    ``top_k_report`` best for the report and the ensemble, and the chosen prompt (``rule``), which is
    written to ``prompt.json`` whenever it changes, so that a killed run keeps it; after training,
    :meth:`finish` tests what was chosen and writes the run's outputs."""

    def __init__(
        self, ctx: MethodContext, objective, method: str, rule: PromptRule, state: dict | None = None
    ):
        self.ctx, self.objective, self.method, self.rule = ctx, objective, method, rule
        state = state or {}
        best = state.get("best")
        if best and "dev_accuracy" in best:  # a checkpoint from before the kind-neutral name
            best = {**best, "dev_score": best["dev_accuracy"]}
            del best["dev_accuracy"]
        self.best: Candidate | None = Candidate.from_state(best) if best else None
        # (a checkpoint from before the top prompts were kept has only the best)
        self.top = TopCandidates(ctx.config.top_k_report, state.get("top", [best] if best else []))
        self.saved: tuple[int, ...] | None = None  # the prompt prompt.json holds

    def add(self, found: list[Candidate]) -> None:
        """Prompts just scored on dev; exports the chosen prompt if it changed."""
        self.top.add(found)
        for cand in found:
            if self.best is None or cand.key > self.best.key:
                self.best = cand
        chosen = self.chosen()
        if chosen.ids != self.saved:
            metrics = {f"dev_{self.objective.metric}": chosen.dev_score}
            save_prompt(self.exported(chosen, metrics), self.ctx.run_dir / "prompt.json")
            self.saved = chosen.ids

    def chosen(self) -> Candidate:
        return chosen_prompt(self.rule, self.top, self.best)

    def state(self) -> dict:
        """For the method's checkpoint (its ``best`` and ``top`` keys)."""
        return {"best": asdict(self.best) if self.best else None, "top": self.top.state()}

    def finish(
        self, steps: int, unit: str, train_seconds: float, interrupted: bool, curve: list,
        trainable_params: int = 0, extra_metrics: dict | None = None,
    ) -> MethodResult:  # fmt: skip
        """After training: test the artifact (:func:`evaluate_artifact`) and the top prompts, write
        ``prompt.json`` and ``summary.txt``, and return the run's result. ``steps`` counts ``unit``
        (rl: "steps", search: "prompts"); ``extra_metrics`` join ``prompt.json``'s metrics."""
        ctx, objective, run_dir = self.ctx, self.objective, self.ctx.run_dir
        lm_tokens = int(objective.stats.tokens_processed)  # training and dev; test scoring comes next
        reward_queries = int(objective.stats.pairs_scored)
        best, members, dev_score, test = evaluate_artifact(
            ctx, objective, self.top, self.best, ctx.manual_prompt, self.rule
        )
        top_k = top_k_score(ctx, objective, self.top, test)
        metric = objective.metric
        metrics = {
            f"dev_{metric}": dev_score,
            **({f"chosen_dev_{metric}": best.dev_score} if members else {}),
            **test.details,
            "found_at_step": best.step,
            "steps": steps,
            "train_seconds": round(train_seconds, 1),
            "reward_queries": reward_queries,
            **(extra_metrics or {}),
            **top_k_metrics(objective, self.top, top_k),
        }
        save_prompt(self.exported(best, metrics, members), run_dir / "prompt.json")
        summary = (
            f"run: {run_dir}\n"
            + "".join(f"prompt: {c.text!r}  (token ids {list(c.ids)})\n" for c in (best, *members))
            + f"{test.summary}\n"
            f"{steps} {unit} in {train_seconds:.0f} s, {reward_queries} reward queries"
            + (" (interrupted)" if interrupted else "")
        )
        atomic_write_bytes(run_dir / "summary.txt", (summary + "\n").encode("utf-8"))
        return MethodResult(
            method=self.method, seed=ctx.seed, model=ctx.lm.name, task=ctx.task.name,
            dev_score=dev_score, test_metrics=test.scores, steps=steps, train_seconds=round(train_seconds, 1),
            lm_tokens=lm_tokens, trainable_params=int(trainable_params),
            artifact="prompt.json", artifact_bytes=path_bytes(run_dir / "prompt.json"),
            learned=learned_description(best, members),
            interpretable=True, transferable=True, curve=curve, interrupted=interrupted,
            metric=metric, calibration=ctx.config.calibration,
            calibrated_with=test.details.get("calibrated_with"), reward_queries=reward_queries,
            test_correct=test.correct, test_top_k=top_k.mean, top_k=top_k.k, test_top_3=top_k.top_3_mean,
            test_ensemble=top_k.ensemble,
            test_chosen=chosen_test_score(self.top, top_k, best, members),
        )  # fmt: skip

    def exported(self, best: Candidate, metrics: dict, members: list[Candidate] = ()) -> LearnedPrompt:
        """``best`` as ``prompt.json`` (with ``members``: the ensemble of it and them)."""
        from rlprompt.calibration import recorded_priors, task_calibration

        cfg, task, objective, lm = self.ctx.config, self.ctx.task, self.objective, self.objective.lm
        priors = []
        if hasattr(objective, "task_prompt"):  # a classification prompt: the priors its test used
            prompts = [objective.task_prompt(c.ids) for c in (best, *members)]
            priors = recorded_priors(self.ctx.test_scorer, prompts, task_calibration(cfg.calibration, task))
        return LearnedPrompt(
            text=best.text, token_ids=objective.task_token_ids(best.ids), model=recorded_model_name(lm.name),
            model_kind=lm.kind,
            task=task.name, policy_model=objective.policy_lm.name, policy_token_ids=list(best.ids),
            data_seed=getattr(task, "data_seed", cfg.task.seed), task_source=cfg.task.name,
            test_examples=cfg.task.test_examples, method=self.method, seed=self.ctx.seed, metrics=metrics,
            library_version=__version__,
            calibration=cfg.calibration, priors=priors, **objective.export_fields(),
            **ensemble_fields(objective, best, members),
        )  # fmt: skip


def evaluate_artifact(ctx: MethodContext, objective, top: TopCandidates, best: Candidate, manual: str,
                      rule: PromptRule) -> tuple[Candidate, list[Candidate], float, TestResult]:  # fmt: skip
    """The run's artifact and its test: the chosen prompt (:func:`chosen_prompt` by ``rule``) alone, or
    (``config.ensemble`` > 1, a classification objective; other kinds refuse it when the task loads) the
    ensemble of it and the next best prompts by dev in ``top``. Returns the chosen prompt, those
    other prompts (none for one prompt, or when no other reached dev), the artifact's dev score and the
    objective's test."""
    best = chosen_prompt(rule, top, best)
    members = [c for c in top.items if c.ids != best.ids][: ctx.config.ensemble - 1]
    if not members:
        return best, [], best.dev_score, objective.test(ctx, best, manual)
    dev_score = objective.dev_ensemble([best.ids, *(c.ids for c in members)])
    return best, members, dev_score, objective.test(ctx, best, manual, members, dev_score)


def learned_description(best: Candidate, members: list[Candidate]) -> str:
    """What a prompt method learned, for reports: the prompt, or an ensemble's prompts."""
    if not members:
        return best.text
    return " + ".join(repr(c.text) for c in (best, *members))


def tested_prompts(config) -> int:
    """Prompts an rl or search run scores on test besides the empty one (for the plan): the reported top
    ones (:func:`top_k_score`; the chosen prompt and an ensemble's members are among them) and the manual
    prompt."""
    return max(config.top_k_report, config.ensemble, 1) + 1


def top_k_score(ctx: MethodContext, objective, top: TopCandidates, test: TestResult) -> TopK:
    """The ``top`` prompts' primary test metric (``MethodResult.test_top_k``, ``top_k``, and each prompt's
    in ``prompt.json``). One prompt: the chosen one's score."""
    if not hasattr(objective, "test_top") or not top.items:
        return TopK()
    if len(top.items) == 1:
        score = float(test.scores[objective.metric])
        return TopK(score, 1, [score])
    scores, ensembles = objective.test_top(ctx, top.items)
    return TopK(float(np.mean(scores)), len(scores), scores, ensembles)


@dataclass
class TestResult:
    """A learned prompt on test: the task kind's metrics (``MethodResult.test_metrics``), the details for
    ``prompt.json`` and the summary lines."""

    scores: dict[str, float]
    details: dict
    summary: str
    correct: str | None = None  # classification: MethodResult.test_correct


@dataclass
class Estimate:
    """A method's cost for one seed, before it runs (``--dry-run``; each method's ``estimate`` function)."""

    reward_queries: int
    reward_queries_max: int  # upper bound
    seconds: float  # training and test evaluation
