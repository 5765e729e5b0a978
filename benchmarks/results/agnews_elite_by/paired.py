"""Two settings' runs paired over the test examples: run directories in pairs (A B ...), each pair the same
split and seed. Per pair: the ensembles' test accuracy, A - B in points ± its standard error over the
test sample, the chosen prompts'; then the mean over the pairs, the spread over runs, and on how many
pairs A was ahead. (benchmarks/paired_conditions.py does this for comparison directories.)"""

import json
import sys
from pathlib import Path

import numpy as np


def main(dirs: list[str]) -> None:
    diffs, errors = [], []
    for a, b in zip(dirs[::2], dirs[1::2], strict=True):
        ra, rb = (json.loads((Path(d) / "result.json").read_text()) for d in (a, b))
        ca, cb = (np.array([c == "1" for c in r["test_correct"]], float) for r in (ra, rb))
        d = ca - cb
        diffs.append(d.mean())
        errors.append(d.std(ddof=1) / np.sqrt(len(d)))
        print(f"{Path(a).name:14s} {ra['test_ensemble']:.3f} vs {rb['test_ensemble']:.3f}  "
              f"{100 * d.mean():+.1f} ± {100 * errors[-1]:.1f}  "
              f"chosen {ra['test_chosen']:.3f} vs {rb['test_chosen']:.3f}")  # fmt: skip
    k, ahead = len(diffs), sum(d > 0 for d in diffs)
    error = 100 * np.sqrt(np.sum(np.square(errors))) / k
    print(f"mean over {k}: {100 * np.mean(diffs):+.2f} ± {error:.2f} (test-sample SE); "
          f"sd over runs {100 * np.std(diffs, ddof=1):.2f}; A ahead on {ahead} of {k}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
