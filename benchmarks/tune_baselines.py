"""Give the baselines the tuning RL got: a small sweep of each one's main setting on development splits.

RL's settings (restarts, self-imitation) were chosen by the test accuracy of runs on
the development splits 16-13 and 16-21, never on 16-100, the split of the comparison's table. This
script gives each baseline the same: for every method it runs the config's value of its main setting and
values around it (the learning rate of soft prompt, prefix tuning, LoRA, IA3 and full fine-tuning; the
CMA-ES step size ``sigma`` of BBT; RL's PPO learning rate gets the same, ``--methods rl``), each on
the same development splits and seeds, at the method's own
budget from the config (never less), and chooses the value with the highest mean test accuracy there
(the dev accuracy of the chosen checkpoint is shown beside it). A tie keeps the config's value. A value
whose run fails (a learning rate so large the loss turns NaN, say) is listed as failed and never chosen.

    .venv/bin/python benchmarks/tune_baselines.py --config configs/sst2_compare.yaml --out runs/tune
    .venv/bin/python benchmarks/tune_baselines.py --methods lora ia3 --factors 0.3 1 3 --splits 16-13

Each (split, method, value) is one run directory under ``--out``; a run that finished is kept, so an
interrupted sweep continues where it stopped when started again. ``--set key=value`` applies to every
run (e.g. ``threads_per_run=1``). Writes ``--out``/tune.md and tune.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rlprompt.config import load_train_config
from rlprompt.console import quiet_libraries
from rlprompt.driver import train
from rlprompt.errors import RLPromptError
from rlprompt.methods.base import MethodResult

# The setting each method is swept over: the one its results depend on most at a fixed budget.
SWEPT = {
    "soft_prompt": "learning_rate",
    "prefix_tuning": "learning_rate",
    "lora": "learning_rate",
    "ia3": "learning_rate",
    "full_finetune": "learning_rate",
    "bbt": "sigma",
    "rl": "learning_rate",  # PPO's: RL gets the same sweep, so neither side had more tuning
}


def values_for(config, method: str, factors: list[float]) -> tuple[float, list[float]]:
    """The config's value of the method's swept setting and the values to try (it among them)."""
    current = float(getattr(getattr(config, method), SWEPT[method]))
    values = sorted({float(f"{current * f:.3g}") for f in factors} | {current})
    return current, values


def choose(rows: list[dict], current: float) -> float:
    """The value with the highest mean test accuracy; on a tie the config's value stays, else the smaller
    (a smaller learning rate or step size moves the start less)."""

    def key(row):
        test = -np.inf if np.isnan(row["test"]) else round(row["test"], 6)
        return test, row["value"] == current, -row["value"]

    return max(rows, key=key)["value"]


def run_variant(config_path: str, overrides: list[str], out: Path) -> dict:
    """One run (kept when it finished before, continued from its checkpoint when it was stopped): its
    chosen checkpoint's dev and test accuracy. A run stopped now (Ctrl-C, SIGTERM) stops the sweep."""
    result = _finished(out)
    if result is None:
        config = load_train_config(config_path, overrides)
        train(config, progress=False, run_dir=out, resume=out.exists(), show_plan=False)
        result = _finished(out)
        if result is None:
            raise KeyboardInterrupt
    return {"dev": result.dev_score, "test": result.test_metrics["accuracy"], "seconds": result.train_seconds}


def _finished(run_dir: Path) -> MethodResult | None:
    """The run's result, unless it has none yet or was stopped before it finished."""
    path = run_dir / "result.json"
    result = MethodResult.load(path) if path.exists() else None
    return None if result is None or result.interrupted else result


def sweep(config_path: str, overrides: list[str], method: str, values: list[float], splits: list[str],
          seeds: list[int], out: Path) -> list[dict]:  # fmt: skip
    """Every value on every split and seed: per value its mean dev and test accuracy and the runs."""
    key, rows = SWEPT[method], []
    for value in values:
        runs = []
        for split in splits:
            for seed in seeds:
                run_overrides = [*overrides, f"methods=[{method}]", f"seeds=[{seed}]", f"task.seed={split}",
                                 f"{method}.{key}={value}"]  # fmt: skip
                where = f"{method} {key}={value:g} split {split} seed {seed}"
                try:
                    run = run_variant(
                        config_path, run_overrides, out / f"split-{split}" / run_name(method, value, seed)
                    )
                except RLPromptError as error:  # this value fails (e.g. a NaN loss): the others still run
                    run = {"dev": float("nan"), "test": float("nan"), "seconds": 0.0, "failed": str(error)}
                    print(f"{where}: failed: {error}", flush=True)
                else:
                    print(
                        f"{where}: dev {run['dev']:.3f} test {run['test']:.3f} ({run['seconds']:.0f} s)",
                        flush=True,
                    )
                runs.append(run)
        rows.append({"value": value, "dev": float(np.mean([r["dev"] for r in runs])),
                     "test": float(np.mean([r["test"] for r in runs])), "runs": runs})  # fmt: skip
    return rows


def run_name(method: str, value: float, seed: int) -> str:
    return f"{method}__{SWEPT[method]}={value:g}__s{seed}"


def markdown(table: dict, config_path: str, splits: list[str], seeds: list[int]) -> str:
    lines = [f"Sweep on splits {', '.join(splits)}, seeds {', '.join(map(str, seeds))} (`{config_path}`): "
             "mean test and dev accuracy of the chosen checkpoint", "",
             "| method | setting | value | dev | test | |", "|---|---|---|---|---|---|"]  # fmt: skip
    for method, entry in table.items():
        for row in entry["rows"]:
            flags = {"chosen": row["value"] == entry["chosen"],
                     "config": row["value"] == entry["config_value"],
                     "failed": any("failed" in run for run in row["runs"])}  # fmt: skip
            marks = [name for name, on in flags.items() if on]
            lines.append(f"| {method} | {entry['setting']} | {row['value']:g} | {row['dev']:.3f} | "
                         f"{row['test']:.3f} | {', '.join(marks)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def tune(args) -> dict[str, dict]:
    """Per method: the swept setting, the config's value, the chosen value and every value's row."""
    base = load_train_config(args.config, args.overrides)
    table = {}
    for method in args.methods:
        current, values = values_for(base, method, args.factors)
        rows = sweep(args.config, args.overrides, method, values, args.splits, args.seeds, args.out)
        table[method] = {"setting": SWEPT[method], "config_value": current, "chosen": choose(rows, current),
                         "rows": rows}  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sst2_compare.yaml")
    parser.add_argument(
        "--methods", nargs="+", default=["soft_prompt", "prefix_tuning", "lora", "ia3", "bbt"]
    )
    parser.add_argument("--splits", nargs="+", default=["16-13", "16-21"], help="development data splits")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--factors", nargs="+", type=float, default=[1 / 3, 1.0, 3.0],
                        help="multiples of the config's value to try")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if "16-100" in args.splits:
        print("note: 16-100 is the comparison table's split; tune on the others", file=sys.stderr)
    unknown = [m for m in args.methods if m not in SWEPT]
    if unknown:
        print(f"error: --methods: no swept setting for {', '.join(unknown)}; one of {', '.join(SWEPT)}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        with quiet_libraries():
            table = tune(args)
    except RLPromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: the finished runs are kept in {args.out}; the same command continues",
            file=sys.stderr,
        )
        return 130
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"config": args.config, "splits": args.splits, "seeds": args.seeds, "methods": table}
    (args.out / "tune.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    text = markdown(table, args.config, args.splits, args.seeds)
    (args.out / "tune.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
