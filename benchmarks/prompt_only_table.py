"""The README's table of prompt-only methods across tasks, from the comparison reports (``report.json``).

    python benchmarks/prompt_only_table.py mr=benchmarks/results/mr_prompt_only_report.json \
        cr=benchmarks/results/cr_prompt_only_report.json

One row per method: each task's test accuracy in the run's reported setting (mean ± std over the seeds) and
RL's paired difference against it (± its standard error over the test examples), then the mean over tasks.
"""

from __future__ import annotations

import json
import sys


def _cell(stats: dict | None) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    std = stats.get("std")
    return f"{stats['mean']:.3f}" + (f" ± {std:.3f}" if std is not None and stats.get("n", 1) > 1 else "")


def table(reports: dict[str, dict]) -> str:
    methods: list[str] = []
    for report in reports.values():
        methods += [m for m in report["methods"] if m not in methods]
    head = "| method | " + " | ".join(f"{t}: test | {t}: rl − method" for t in reports) + " | mean test |"
    lines = [head, "|---" * (2 * len(reports) + 2) + "|"]
    for method in methods:
        cells, means = [], []
        for report in reports.values():
            entry = report["methods"].get(method)
            cells.append(_cell(entry["test"] if entry else None))
            if entry and entry["test"].get("mean") is not None:
                means.append(entry["test"]["mean"])
            diff = next((d for d in report["paired_differences"]["against"] if d["method"] == method), None)
            cells.append(f"{diff['difference']:+.3f} ± {diff['standard_error']:.3f}" if diff else "")
        mean = f"{sum(means) / len(means):.3f}" if len(means) == len(reports) else "—"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print("usage: prompt_only_table.py TASK=REPORT.json ...", file=sys.stderr)
        return 2
    reports = {}
    for arg in argv:
        task, path = arg.split("=", 1)
        try:
            with open(path) as f:
                reports[task] = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 1
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
