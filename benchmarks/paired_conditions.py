"""The same methods and seeds under two conditions (e.g. without and with ``task.demonstrations``), paired
over the test examples.

    python benchmarks/paired_conditions.py benchmarks/results/demonstrations_sst-2/without/16-13 \
        benchmarks/results/demonstrations_sst-2/with/16-13

Each argument is a folder of runs named ``<method>__s<seed>`` (a comparison directory). One row per method
that both folders ran on at least one common seed: each condition's test accuracy (as the runs report it,
mean over those seeds), the second minus the first averaged over the test examples and seeds, its standard
error from the test sample (sd over the n examples of each one's difference averaged over the seeds, / √n)
and on how many seeds the second was ahead.

    python benchmarks/paired_conditions.py --runs FIRST1 SECOND1 FIRST2 SECOND2 ...

pairs single run directories instead (each pair one method on the same test examples, under the first and
the second condition; e.g. over several data splits): one line per pair (headline and chosen-prompt test
accuracy, second − first ± its test-sample error), then the same summary over all pairs and the spread of
the per-pair differences.
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


def paired(pairs: list[tuple[MethodResult, MethodResult]]) -> tuple[float, float, int]:
    """Second − first over (first, second) run pairs on the same test examples: the mean difference, its
    standard error from the test sample (sd over the examples of each one's difference averaged over the
    pairs, / √n) and on how many pairs the second was ahead."""
    per_example = np.stack([_correct(b) - _correct(a) for a, b in pairs]).mean(axis=0)
    error = per_example.std(ddof=1) / np.sqrt(len(per_example))
    ahead = sum(b.test_score > a.test_score for a, b in pairs)
    return float(per_example.mean()), float(error), int(ahead)


def table(first: Path, second: Path) -> str:
    a, b = _runs(first), _runs(second)
    names = [f"{p.parent.name}/{p.name}" for p in (first, second)]
    lines = [f"| method | seeds | {names[0]} | {names[1]} | second − first | standard error | second ahead |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in dict.fromkeys(m for m, _ in b):
        seeds = sorted(s for m, s in b if m == method and (m, s) in a)
        if not seeds:
            continue
        mean, error, ahead = paired([(a[(method, s)], b[(method, s)]) for s in seeds])
        mean_a = np.mean([a[(method, s)].test_score for s in seeds])
        mean_b = np.mean([b[(method, s)].test_score for s in seeds])
        difference = f"{100 * mean:+.1f} points | {100 * error:.1f}"
        seed_list = ", ".join(map(str, seeds))
        lines.append(f"| {method} | {seed_list} | {mean_a:.3f} | {mean_b:.3f} | {difference} | "
                     f"{ahead} of {len(seeds)} |")  # fmt: skip
    return "\n".join(lines)


def run_pairs(dirs: list[str]) -> str:
    """The ``--runs`` report: one line per (first, second) pair of run directories, then the summary."""
    pairs = [(MethodResult.load(Path(a) / "result.json"), MethodResult.load(Path(b) / "result.json"))
             for a, b in zip(dirs[::2], dirs[1::2], strict=True)]  # fmt: skip
    lines, diffs = [], []
    for (a, b), name in zip(pairs, dirs[1::2], strict=True):
        difference, error, _ = paired([(a, b)])
        diffs.append(difference)
        lines.append(f"{Path(name).name}: {a.test_score:.3f} -> {b.test_score:.3f}, "
                     f"{100 * difference:+.1f} ± {100 * error:.1f} points"
                     + (f"; chosen prompt {a.test_chosen:.3f} -> {b.test_chosen:.3f}"
                        if a.test_chosen is not None and b.test_chosen is not None else ""))  # fmt: skip
    mean, error, ahead = paired(pairs)
    lines.append(f"mean over {len(pairs)} pairs: {100 * mean:+.2f} ± {100 * error:.2f} points (test sample), "
                 f"sd over pairs {100 * np.std(diffs, ddof=1):.2f}; "
                 f"second ahead on {ahead} of {len(pairs)}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--runs"] and len(args) > 1 and len(args) % 2:
        missing = [d for d in args[1:] if not (Path(d) / "result.json").is_file()]
        if missing:
            sys.exit(f"{missing[0]}: no result.json (not a finished run directory)")
        print(run_pairs(args[1:]))
    elif len(args) == 2 and "--runs" not in args:
        print(table(Path(args[0]), Path(args[1])))
    else:
        sys.exit(__doc__)
