"""The comparison report: every ``result.json`` under some run directories gathered into ``report.md`` (one
row per method: test accuracy mean ± std over seeds, and the costs) and ``learning_curves.png`` (best dev
score so far against task-LM tokens processed). The driver writes it at the end of a comparison;
``python -m rlprompt.report`` (:mod:`rlprompt.report`) rebuilds it from run directories."""

from __future__ import annotations

import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlprompt.errors import RLPromptError
from rlprompt.files import atomic_write_bytes, check_output_dir, read_yaml
from rlprompt.methods import REFERENCES, MethodResult
from rlprompt.registry import METHODS
from rlprompt.tables import markdown_table, number

ORDER = list(METHODS)  # the registry's order


def collect(paths: list[str | Path]) -> list[MethodResult]:
    """Every method result under ``paths`` (each a run directory or a directory of runs)."""
    results, seen = [], set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise RLPromptError(f"{path}: {'a file, not' if path.exists() else 'no such'} run directory")
        files = (
            [path / "result.json"] if (path / "result.json").exists() else sorted(path.rglob("result.json"))
        )
        if not files:
            raise RLPromptError(f"{path}: no result.json in it (is the run finished?)")
        for file in files:
            if file.resolve() in seen:  # a run given on its own and inside its comparison, say
                print(f"warning: {file} is under more than one of the directories given; counted once",
                      file=sys.stderr)  # fmt: skip
                continue
            seen.add(file.resolve())
            try:
                result = MethodResult.load(file)
            except (ValueError, TypeError) as err:
                raise RLPromptError(f"{file}: not a valid result file ({err})") from None
            if result.data_seed is None:  # written before results named their split
                result.data_seed = _data_seed_of(file.parent)
            if result.test_top_3 is None and (result.top_k or 0) > 3:  # written before it was recorded
                result.test_top_3 = _top_3_of(file.parent / result.artifact)
            results.append(result)
    return results


def _top_3_of(prompt_file: Path) -> float | None:
    """RLPrompt's top-3 mean from a prompt file's ``metrics.top_k_prompts`` (each one's test score), or
    None where the file or the scores are missing."""
    try:
        top = json.loads(prompt_file.read_text(encoding="utf-8"))["metrics"]["top_k_prompts"][:3]
        return float(np.mean([p["test"] for p in top])) if top else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _data_seed_of(run_dir: Path) -> str | None:
    """The few-shot split a run's ``config.yaml`` names (a built-in task's), or None."""
    from rlprompt.tasks import BUILTIN_TASKS

    try:
        task = read_yaml(run_dir / "config.yaml").get("task") or {}
    except RLPromptError:
        return None
    return str(task["seed"]) if isinstance(task, dict) and task.get("name") in BUILTIN_TASKS else None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _grouped(results: list[MethodResult]) -> dict[str, list[MethodResult]]:
    groups: dict[str, list[MethodResult]] = defaultdict(list)
    for r in results:
        groups[r.method].append(r)
    return dict(sorted(groups.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else 99, kv[0])))


def _metric(results: list[MethodResult]) -> str:
    """The primary metric the runs report (one task kind per report)."""
    names = sorted({r.metric for r in results})
    return " / ".join(names) if names else "accuracy"


def collect_references(paths: list[str | Path]) -> list[dict]:
    """The reference rows (manual and empty prompt, raw and calibrated) a comparison directory holds (one
    set per data split for a grid over splits); each set is marked with the directory given (``grid``):
    only one grid's splits are averaged together."""
    found, seen = [], set()
    for path in map(Path, paths):
        for file in sorted([path / REFERENCES] + list(path.glob(f"split-*/{REFERENCES}"))):
            if not file.is_file() or file.resolve() in seen:
                continue
            seen.add(file.resolve())
            try:
                found.append({**json.loads(file.read_text(encoding="utf-8")), "grid": str(path)})
            except (ValueError, UnicodeDecodeError) as err:
                raise RLPromptError(f"{file}: not valid JSON ({err})") from None
    return found


def _reference_rows(references: list[dict]) -> list[dict]:
    """The reference prompts' rows, one per prompt and grid: test accuracy raw and calibrated, each as the
    list of its values over the grid's data splits."""
    rows: dict[tuple, dict] = {}
    for reference in references:
        for row in reference["rows"]:
            empty = {"name": row["name"], "prompt": row["prompt"], "raw": [], "calibrated": []}
            key = (reference.get("grid"), reference.get("calibrated_with"), row["name"], row["prompt"])
            merged = rows.setdefault(key, empty)
            merged["raw"].append(row["test_accuracy_raw"])
            merged["calibrated"].append(row["test_accuracy_calibrated"])
    # Two grids of one setup (seeds run in two parts, reported together) hold the same figures: one row.
    distinct: dict[tuple, dict] = {}
    for (_, calibrated_with, *_), row in rows.items():
        figures = (calibrated_with, row["name"], row["prompt"], tuple(row["raw"]), tuple(row["calibrated"]))
        distinct.setdefault(figures, row)
    return list(distinct.values())


def _runs_key(r: MethodResult) -> tuple:
    return (r.data_seed or "", r.seed)


def paired_differences(results: list[MethodResult], baseline: str = "rl") -> list[dict]:
    """``baseline`` against every other method, on the runs both have (same data split and seed), all on one
    test set (a built-in task's test set is every split's): per test example, the difference of being
    right (baseline − method) averaged over those runs; their mean (the accuracy difference), its
    standard error over the test examples (sd / √n: the test sample's uncertainty; the runs share the
    examples, so they are not independent samples of it), the spread of the per-run differences, and on
    how many runs the baseline was ahead. Runs without per-example results are left out."""
    groups = _grouped(results)
    if baseline not in groups:
        return []
    mine = {_runs_key(r): r for r in groups[baseline] if r.test_correct}
    out = []
    for method, rs in groups.items():
        if method == baseline:
            continue
        rows = []
        for r in rs:
            other = mine.get(_runs_key(r))
            if other is None or not r.test_correct or len(r.test_correct) != len(other.test_correct):
                continue
            rows.append(_correct(other) - _correct(r))
        rows = [d for d in rows if len(d) == len(rows[0])] if rows else []
        if not rows:
            continue
        diffs = np.stack(rows)  # (runs, test examples)
        per_run, per_example = diffs.mean(1), diffs.mean(0)
        n = diffs.shape[1]
        out.append({
            "method": method, "runs": len(rows), "difference": float(per_run.mean()),
            "standard_error": float(per_example.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "std_over_runs": float(per_run.std(ddof=1)) if len(rows) > 1 else None,
            "baseline_ahead": int((per_run > 0).sum()), "test_examples": n,
        })  # fmt: skip
    return out


def _correct(r: MethodResult) -> np.ndarray:
    return np.frombuffer(r.test_correct.encode(), np.uint8).astype(float) - ord("0")


def _finite(value):
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _stats(values: list[float | None]) -> dict | None:
    if not values or any(v is None for v in values):
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}  # fmt: skip


def _top_3(result: MethodResult) -> float | None:
    """RLPrompt's top-3 mean of a run; a result.json written before it was recorded has it only when the run
    kept at most 3 prompts."""
    if result.test_top_3 is not None:
        return result.test_top_3
    return result.test_top_k if result.top_k is not None and result.top_k <= 3 else None


def report_json(results: list[MethodResult], references: list[dict] = (), failures: list[dict] = (),
                baseline: str = "rl") -> dict:  # fmt: skip
    """The report's numbers, machine-readable (``report.json``): per method the test and dev scores over
    runs (mean, sample std, count) and each run; the reference prompts; the paired differences of
    ``baseline`` against each other method; the failed runs."""
    methods = {}
    for method, rs in _grouped(results).items():
        methods[method] = {
            "metric": rs[0].metric,
            "calibration": sorted({r.calibration for r in rs}),
            "test": _stats([r.test_score for r in rs]),
            "test_raw": _stats([_raw(r) for r in rs]),
            "test_calibrated": _stats([r.test_metric("accuracy_calibrated") for r in rs]),
            "test_top_k": _stats([r.test_top_k for r in rs]),
            "test_top_3": _stats([_top_3(r) for r in rs]),
            "test_ensemble": _stats([r.test_ensemble for r in rs]),
            "test_chosen": _stats([r.test_chosen for r in rs]),
            "top_k": sorted({r.top_k for r in rs if r.top_k}),
            "dev": _stats([r.dev_score for r in rs]),
            "train_seconds": _stats([r.train_seconds for r in rs]),
            "reward_queries": _stats([r.reward_queries for r in rs]),
            "lm_tokens": _stats([r.lm_tokens for r in rs]),
            "trainable_params": _stats([r.trainable_params for r in rs]),
            "artifact_bytes": _stats([r.artifact_bytes for r in rs]),
            "perplexity_before": _stats([r.perplexity_before for r in rs]),
            "perplexity_after": _stats([r.perplexity_after for r in rs]),
            "interpretable": rs[0].interpretable, "transferable": rs[0].transferable,
            "runs": [{"data_seed": r.data_seed, "seed": r.seed, "calibration": r.calibration,
                      "dev": r.dev_score, "test": r.test_score, "test_metrics": r.test_metrics,
                      "test_top_k": r.test_top_k, "test_top_3": _top_3(r),
                      "test_ensemble": r.test_ensemble,
                      "test_chosen": r.test_chosen,
                      "learned": r.learned, "steps": r.steps, "train_seconds": r.train_seconds,
                      "reward_queries": r.reward_queries, "lm_tokens": r.lm_tokens,
                      "interrupted": r.interrupted}
                     for r in sorted(rs, key=_runs_key)],
        }  # fmt: skip
    return {
        "tasks": sorted({r.task for r in results}), "models": sorted({r.model for r in results}),
        "data_seeds": sorted({r.data_seed for r in results if r.data_seed}),
        "seeds": sorted({r.seed for r in results}), "methods": methods,
        "references": [{"name": row["name"], "prompt": row["prompt"], "test_raw": _stats(row["raw"]),
                        "test_calibrated": _stats(row["calibrated"])} for row in _reference_rows(references)],
        "paired_differences": {"baseline": baseline, "against": paired_differences(results, baseline)},
        "failures": [{k: f[k] for k in ("split", "method", "seed", "error") if k in f} for f in failures],
    }  # fmt: skip


def _raw(r: MethodResult) -> float:
    raw = r.test_metric("accuracy_raw")
    return raw if raw is not None else r.test_score


def collect_failures(paths: list[str | Path]) -> list[dict]:
    """The runs of a grid that failed (their ``failure.json``), method and seed order; a grid over data
    splits names each one's split (``split``)."""
    found, seen = [], set()
    for path in map(Path, paths):
        files = path.glob("*/failure.json"), path.glob("split-*/*/failure.json"), path.glob("failure.json")
        for file in [f for group in files for f in sorted(group)]:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            try:
                failure = json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                failure = {"method": file.parent.name, "seed": "?", "error": f"{file}: unreadable"}
            if file.parent.parent.name.startswith("split-"):
                failure["split"] = file.parent.parent.name.removeprefix("split-")
            found.append(failure)
    return found


def _seeds_cell(rs: list[MethodResult]) -> str:
    """How many runs a row averages, and how many of them were interrupted."""
    stopped = sum(bool(r.interrupted) for r in rs)
    return f"{len(rs)} ({stopped} interrupted)" if stopped else str(len(rs))


def report_markdown(
    results: list[MethodResult], references: list[dict] = (), failures: list[dict] = ()
) -> str:
    """The comparison table (with the reference prompts' rows) and per-seed details as Markdown."""
    groups = _grouped(results)
    models = sorted({r.model for r in results})
    tasks = sorted({r.task for r in results})
    what = _metric(results)
    calibrated_with = sorted({r.calibrated_with for r in results if r.calibrated_with} |
                             {ref["calibrated_with"] for ref in references})  # fmt: skip
    cal = "/".join(calibrated_with) or "batch"
    lines = [
        f"# Comparison: {', '.join(tasks)} on {', '.join(models)}",
        "",
        f"Test {what} of the prompt or checkpoint each method kept on dev (by dev {what}; the gradient "
        "methods by the config's checkpoint_rule), mean ± sample std over seeds, raw and "
        f"calibrated ({cal}: each prompt's label prior on the model, estimated without labels, removed "
        "before the argmax; see rlprompt/calibration.py). Scored: how the run scored dev (and so chose its "
        "prompt or checkpoint). The manual and empty prompts are reference rows, both ways. "
        "Train time: wall time of training and dev evaluations (not test). "
        "Reward queries: (prompt, example) pairs scored in training and dev by the methods that query "
        "scores (the budget max_reward_queries counts these). "
        "LM tokens: task-LM tokens fed forward in training and dev evaluation (a backward pass costs about "
        "twice a forward one on top, for the gradient methods). Forgetting: perplexity on general held-out "
        "sentences before → after (a discrete prompt leaves the model unchanged).",
        "",
    ]
    headers = ["method", "scored", f"test {what} raw", f"test {what} calibrated ({cal})", f"dev {what}",
               "seeds", "trainable params", "artifact", "train time", "reward queries", "LM tokens",
               "forgetting (ppl)", "interpretable", "transferable"]  # fmt: skip
    rows = []
    for method, rs in groups.items():
        ppl = "none (model unchanged)"
        if any(r.perplexity_after is not None for r in rs):
            before = np.mean([r.perplexity_before for r in rs if r.perplexity_before is not None])
            after = np.mean([r.perplexity_after for r in rs if r.perplexity_after is not None])
            ppl = f"{before:.1f} → {after:.1f}"
        mean = lambda field, rs=rs: np.mean([getattr(r, field) for r in rs])  # noqa: E731
        calibrated = [r.test_metric("accuracy_calibrated") for r in rs]
        spent = [r.reward_queries for r in rs]
        rows.append([
            method, "/".join(sorted({r.calibration for r in rs})), _mean_std([_raw(r) for r in rs]),
            _mean_std(calibrated) if None not in calibrated else "—", _mean_std([r.dev_score for r in rs]),
            _seeds_cell(rs), _count(mean("trainable_params")), _size(mean("artifact_bytes")),
            f"{mean('train_seconds'):.0f} s", _count(np.mean(spent)) if None not in spent else "—",
            _count(mean("lm_tokens")), ppl, "yes" if rs[0].interpretable else "no",
            "yes" if rs[0].transferable else "no",
        ])  # fmt: skip
    for row in _reference_rows(references):
        name = f"{row['name']} `{row['prompt']!r}` (reference)"
        unchanged = "none (model unchanged)"
        rows.append([name, "—", _mean_std(row["raw"]), _mean_std(row["calibrated"]), "—", "—", 0, "—", "—",
                     "—", "—", unchanged, "yes", "yes"])  # fmt: skip
    lines += [markdown_table(headers, rows)]
    stopped = [r for r in results if r.interrupted]
    if stopped:
        listed = ", ".join(f"{r.method} seed {r.seed}" + (f" on {r.data_seed}" if r.data_seed else "")
                           for r in sorted(stopped, key=_runs_key))  # fmt: skip
        lines += ["", "Interrupted before the end of training, so counted above with the prompt or "
                  f"checkpoint kept so far: {listed} (`python -m rlprompt.train --resume` on the "
                  "comparison directory finishes them)."]  # fmt: skip
    splits = sorted({r.data_seed for r in results if r.data_seed})
    if len(splits) > 1:
        lines += ["", f"Runs: {len(splits)} data splits ({', '.join(splits)}) x seeds; mean ± std over all."]
    top = {m: rs for m, rs in groups.items() if all(r.test_top_k is not None for r in rs)}
    if top:
        ks = "/".join(str(k) for k in sorted({r.top_k for rs in top.values() for r in rs}))
        # RLPrompt's top-3 mean beside the top-k mean when the runs kept more than 3 prompts
        top_3 = ks != "3" and all(_top_3(r) is not None for rs in top.values() for r in rs)
        ensemble = all(r.test_ensemble is not None for rs in top.values() for r in rs)
        ensembled = any(r.test_chosen is not None for rs in top.values() for r in rs)
        lines += ["", f"## The chosen prompt and the top-{3 if top_3 else ks} mean", "",
                  f"RLPrompt reports the mean test {what} of the top 3 prompts by dev; the chosen prompt is "
                  f"one of them (by the method's prompt_rule). Both as the run scored"
                  + (f"; the ensemble predicts each test input's label from the top-{ks} prompts' mean "
                     "label log-probabilities." if ensemble else ".")
                  + (" Where a run's artifact is an ensemble (`ensemble: k`), the headline above is the "
                     "ensemble's and this table's first column its chosen prompt's alone."
                     if ensembled else ""),
                  "",
                  markdown_table(["method", f"chosen prompt, test {what}",
                                  *([f"top-3 mean, test {what}"] if top_3 else []),
                                  f"top-{ks} mean, test {what}",
                                  *([f"top-{ks} ensemble, test {what}"] if ensemble else [])],
                                 [[m, _mean_std([r.test_score if r.test_chosen is None else r.test_chosen
                                                 for r in rs]),
                                   *([_mean_std([_top_3(r) for r in rs])] if top_3 else []),
                                   _mean_std([r.test_top_k for r in rs]),
                                   *([_mean_std([r.test_ensemble for r in rs])] if ensemble else [])]
                                  for m, rs in top.items()])]  # fmt: skip
    paired = paired_differences(results)
    if paired:
        lines += ["", "## RL against each method, example by example", "",
                  f"Test {what} of rl minus the method's, on the same test examples, over the data splits "
                  "and seeds both ran: the mean difference, its standard error from the test sample (sd "
                  "over the n test examples of each one's difference averaged over the runs, / √n), the "
                  "spread of the per-run differences, and on how many runs rl was ahead.", "",
                  markdown_table(["method", "runs", "rl − method", "standard error", "std over runs",
                                  "rl ahead"],
                                 [[p["method"], p["runs"], f"{p['difference']:+.3f}",
                                   number(p["standard_error"]), number(p["std_over_runs"]),
                                   f"{p['baseline_ahead']} of {p['runs']}"]
                                  for p in paired])]  # fmt: skip
    lines += ["", "## Per seed", ""]
    per_seed = []
    for method, rs in groups.items():
        for r in sorted(rs, key=_runs_key):
            flag = " (interrupted)" if r.interrupted else ""
            calibrated = number(r.test_metric("accuracy_calibrated"))
            split = [r.data_seed or "—"] if len(splits) > 1 else []
            per_seed.append([method, *split, r.seed, number(r.dev_score), number(_raw(r)), calibrated,
                             f"{r.steps}{flag}", r.learned])  # fmt: skip
    split_header = ["data split"] if len(splits) > 1 else []
    headers = ["method", *split_header, "seed", "dev", "test raw", "test calibrated", "steps", "learned"]
    lines.append(markdown_table(headers, per_seed))
    if failures:
        lines += ["", "## Failed runs", "", "Not in the table above; `python -m rlprompt.train --resume DIR` "
                  "runs them again once the cause is fixed.", "",
                  markdown_table(["method", "seed", "error"],
                                 [[f["method"] + (f" (split {f['split']})" if "split" in f else ""),
                                   f["seed"], f["error"]] for f in failures])]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curves(results: list[MethodResult], path: Path) -> None:
    """Best dev score so far against LM tokens, averaged over seeds at each evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, rs) in enumerate(_grouped(results).items()):
        color = f"C{i}"  # one colour per method, lines and single points alike
        length = min(len(r.curve) for r in rs)
        if length == 0:
            continue
        tokens = np.mean([[max(p["lm_tokens"], 1) for p in r.curve[:length]] for r in rs], axis=0)
        best = np.mean([[p["best_dev_score"] for p in r.curve[:length]] for r in rs], axis=0)
        if length == 1:
            ax.scatter(tokens, best, label=method, marker="s", zorder=3, color=color)
        else:
            ax.plot(tokens, best, marker=".", label=method, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("task-LM tokens processed (training + dev evaluation)")
    ax.set_ylabel(f"best dev {_metric(results)} so far (mean over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


def write_report(paths: list[str | Path], out_dir: str | Path) -> str:
    """Write ``report.md``, ``report.json`` and ``learning_curves.png`` into ``out_dir``; returns the
    Markdown."""
    results = collect(paths)
    tasks = sorted({r.task for r in results})
    if len(tasks) > 1:  # its rows average a method's runs as seeds: over two tasks that means nothing
        raise RLPromptError(
            f"the runs are on {len(tasks)} tasks ({', '.join(tasks)}); a report compares methods on one "
            "task: report each task's runs separately"
        )
    out_dir = check_output_dir(out_dir, "the report's directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    references, failures = collect_references(paths), collect_failures(paths)
    text = report_markdown(results, references, failures)
    atomic_write_bytes(out_dir / "report.md", text.encode("utf-8"))
    numbers = report_json(results, references, failures)
    dumped = json.dumps(_finite(numbers), indent=1, allow_nan=False)
    atomic_write_bytes(out_dir / "report.json", (dumped + "\n").encode("utf-8"))
    plot_curves(results, out_dir / "learning_curves.png")
    return text
