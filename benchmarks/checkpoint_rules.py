"""Which checkpoint should a gradient baseline keep? Rules that read dev only, judged on test afterwards.

Each gradient method (soft prompt, prefix tuning, LoRA, IA3, full fine-tuning) is evaluated on its 32 dev
examples at the config's evaluation points and keeps one checkpoint. Dev accuracy on 32 examples is coarse:
on the 16-100 split, under negative/positive, the untrained start scored 0.812 on dev and 0.703 on test,
and IA3 and full fine-tuning kept it. This script trains each method on development splits (never 16-100,
the table's split) and records, at every evaluation, the dev accuracy, the dev cross-entropy (both
calibrated as the run scores) and the calibrated accuracy of the same weights on a fixed, seeded sample of
the test set; then it applies each rule to the dev columns alone and reports the mean test accuracy of the
checkpoints each rule keeps (the best-on-test checkpoint is shown as a ceiling, never as a rule).

    .venv/bin/python benchmarks/checkpoint_rules.py --out runs/checkpoint-rules --set threads_per_run=1
    .venv/bin/python benchmarks/checkpoint_rules.py --methods lora ia3 --splits 16-13 --out runs/cr

Each (split, method, seed) is one directory under ``--out``; one that finished is kept, so an interrupted
benchmark continues when started again (two processes on different ``--splits`` share the work; a last
call with every split only reads). Writes ``--out``/checkpoint_rules.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rlprompt.calibration import reference_method, task_calibration
from rlprompt.config import load_train_config
from rlprompt.console import quiet_libraries
from rlprompt.driver import train
from rlprompt.evaluation import scored_result
from rlprompt.methods import tuning

METHODS = ["soft_prompt", "prefix_tuning", "lora", "ia3", "full_finetune"]


def _first(rows, key):
    """The index of the first row with the largest ``key`` (earlier checkpoints win ties)."""
    return max(range(len(rows)), key=lambda i: (key(rows[i]), -i))


# Each rule: the evaluations (rows with step, dev, dev_loss) -> the index of the kept checkpoint.
RULES = {
    "dev accuracy (ties: earliest)": lambda rows: _first(rows, lambda r: r["dev"]),
    "dev accuracy (ties: lower dev loss)": lambda rows: _first(rows, lambda r: (r["dev"], -r["dev_loss"])),
    "dev loss": lambda rows: _first(rows, lambda r: -r["dev_loss"]),
    "trained only: dev accuracy (ties: lower dev loss)": lambda rows: (
        1 + _first(rows[1:], lambda r: (r["dev"], -r["dev_loss"]))
    ),
    "trained only: dev loss": lambda rows: 1 + _first(rows[1:], lambda r: -r["dev_loss"]),
    "last checkpoint": lambda rows: len(rows) - 1,
}
CEILING = "best on test (a ceiling, not a rule)"


class Recorder:
    """Test accuracy of the weights at each dev evaluation. A gradient run asks its trainable for the
    current scorer once per evaluation, with the model in eval mode; the wrapped trainable scores the
    test sample then, calibrated as the run's test is (the prior from the unlabelled training and dev
    inputs)."""

    def __init__(self, sample: int, seed: int = 0):
        self.sample, self.seed, self.rows = sample, seed, []
        self.test = self.calibration = None  # the test sample and calibration, made at the first evaluation

    def wrap(self, cls):
        recorder = self

        class Recording(cls):
            def current_scorer(self):
                scorer = super().current_scorer()
                recorder.rows.append(recorder.test_accuracy(self, scorer))
                return scorer

        return Recording

    def test_accuracy(self, trained, scorer) -> float:
        task, config = trained.ctx.task, trained.ctx.config
        if self.test is None:
            self.test = task.examples("test")
            if self.sample and self.sample < len(self.test):
                picked = np.random.default_rng(self.seed).choice(len(self.test), self.sample, replace=False)
                self.test = [self.test[i] for i in sorted(picked)]
            self.calibration = task_calibration(reference_method(config.calibration), task)

        def score(inputs, progress=False):
            return trained.score_on(scorer, inputs)[None]

        result = scored_result("checkpoint", score, self.test, self.calibration, scorer)
        return float(result.metrics.accuracy)


def run(config_path: str, overrides: list[str], method: str, split: str, seed: int, out: Path,
        sample: int) -> dict:  # fmt: skip
    """One run's evaluations (kept from an earlier call when it finished)."""
    record = out / "evaluations.json"
    if record.exists():
        return json.loads(record.read_text(encoding="utf-8"))
    config = load_train_config(config_path, [*overrides, f"methods=[{method}]", f"seeds=[{seed}]",
                                             f"task.seed={split}"])  # fmt: skip
    recorder = Recorder(sample)
    original = dict(tuning.TRAINABLES)
    tuning.TRAINABLES[method] = recorder.wrap(original[method])
    try:
        train(config, progress=False, run_dir=out, overwrite=out.exists(), show_plan=False)
    finally:
        tuning.TRAINABLES.update(original)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    if len(logged) != len(recorder.rows):
        raise SystemExit(f"{out}: {len(logged)} dev evaluations but {len(recorder.rows)} test ones")
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    rows = [{"step": r["step"], "dev": r["dev_score"], "dev_loss": r["dev_loss"], "test": t}
            for r, t in zip(logged, recorder.rows, strict=True)]  # fmt: skip
    entry = {"method": method, "split": split, "seed": seed, "rows": rows,
             "reported_test": result["test_metrics"]["accuracy"]}  # fmt: skip
    record.write_text(json.dumps(entry, indent=1), encoding="utf-8")
    return entry


def summarise(entries: list[dict]) -> dict:
    """Per method and overall: each rule's mean test accuracy and mean kept step."""
    by_method: dict[str, dict] = {}
    rules = {**RULES, CEILING: lambda rows: _first(rows, lambda r: r["test"])}
    for method in dict.fromkeys(e["method"] for e in entries):
        runs = [e for e in entries if e["method"] == method]
        by_method[method] = {}
        for name, rule in rules.items():
            kept = [e["rows"][rule(e["rows"])] for e in runs]
            by_method[method][name] = {"test": float(np.mean([k["test"] for k in kept])),
                                       "step": float(np.mean([k["step"] for k in kept])),
                                       "tests": [k["test"] for k in kept]}  # fmt: skip
    overall = {name: float(np.mean([m[name]["test"] for m in by_method.values()])) for name in rules}
    return {"methods": by_method, "overall": overall, "runs": len(entries)}


def markdown(summary: dict, splits: list[str], seeds: list[int], sample: int) -> str:
    methods = list(summary["methods"])
    lines = [f"Calibrated test accuracy (a fixed sample of {sample} test examples) of the checkpoint each "
             f"rule keeps; splits {', '.join(splits)}, seeds {', '.join(map(str, seeds))}; mean kept step in "
             "brackets", "", "| rule | " + " | ".join(methods) + " | mean |",
             "|---" * (len(methods) + 2) + "|"]  # fmt: skip
    for name, mean in summary["overall"].items():
        cells = [f"{summary['methods'][m][name]['test']:.3f} ({summary['methods'][m][name]['step']:.0f})"
                 for m in methods]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sst2_compare.yaml")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--splits", nargs="+", default=["16-13", "16-21"], help="development data splits")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--test-sample", type=int, default=600, help="test examples scored per checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if "16-100" in args.splits:
        print("note: 16-100 is the comparison table's split; choose rules on the others", file=sys.stderr)
    entries = []
    try:
        with quiet_libraries():
            for split in args.splits:
                for method in args.methods:
                    for seed in args.seeds:
                        where = args.out / f"split-{split}" / f"{method}__s{seed}"
                        entry = run(args.config, args.overrides, method, split, seed, where, args.test_sample)
                        print(f"{split} {method} s{seed}: " + " ".join(
                            f"{r['step']}:{r['dev']:.2f}/{r['dev_loss']:.3f}/{r['test']:.3f}"
                            for r in entry["rows"]), flush=True)  # fmt: skip
                        entries.append(entry)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are kept in {args.out}; the same command continues",
              file=sys.stderr)  # fmt: skip
        return 130
    summary = summarise(entries)
    summary.update(splits=args.splits, seeds=args.seeds, test_sample=args.test_sample, config=args.config)
    text = markdown(summary, args.splits, args.seeds, args.test_sample)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint_rules.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (args.out / "checkpoint_rules.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
