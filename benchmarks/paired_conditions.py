"""The same methods and seeds under two conditions (e.g. without and with ``task.demonstrations``), paired
over the test examples.

    python benchmarks/paired_conditions.py benchmarks/results/demonstrations_sst-2/without/16-13 \
        benchmarks/results/demonstrations_sst-2/with/16-13

Each argument is a folder of runs named ``<method>__s<seed>`` (a comparison directory). One row per method
that both folders ran on at least one common seed: each condition's test accuracy (as the runs report it,
mean over those seeds), the second minus the first averaged over the test examples and seeds, its standard
error from the test sample (sd over the n examples of each one's difference averaged over the seeds, / √n)
and on how many seeds the second was ahead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rlprompt.methods import MethodResult


def _runs(folder: Path) -> dict[tuple[str, int], MethodResult]:
    runs = {}
    for path in sorted(folder.glob("*__s*/result.json")):
        result = MethodResult.load(path)
        runs[(result.method, result.seed)] = result
    return runs


def _correct(result: MethodResult) -> np.ndarray:
    return np.array([c == "1" for c in result.test_correct], dtype=float)


def table(first: Path, second: Path) -> str:
    a, b = _runs(first), _runs(second)
    names = [f"{p.parent.name}/{p.name}" for p in (first, second)]
    lines = [f"| method | seeds | {names[0]} | {names[1]} | second − first | standard error | second ahead |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in dict.fromkeys(m for m, _ in b):
        seeds = sorted(s for m, s in b if m == method and (m, s) in a)
        if not seeds:
            continue
        diffs = np.stack([_correct(b[(method, s)]) - _correct(a[(method, s)]) for s in seeds])
        per_example = diffs.mean(axis=0)
        error = per_example.std(ddof=1) / np.sqrt(len(per_example))
        ahead = sum(b[(method, s)].test_score > a[(method, s)].test_score for s in seeds)
        mean_a = np.mean([a[(method, s)].test_score for s in seeds])
        mean_b = np.mean([b[(method, s)].test_score for s in seeds])
        difference = f"{100 * per_example.mean():+.1f} points | {100 * error:.1f}"
        seed_list = ", ".join(map(str, seeds))
        lines.append(f"| {method} | {seed_list} | {mean_a:.3f} | {mean_b:.3f} | {difference} | "
                     f"{ahead} of {len(seeds)} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(table(Path(sys.argv[1]), Path(sys.argv[2])))
