"""Choose a task's demonstrations on its training examples instead of drawing them (the question behind
TEMPERA's learned in-context examples: does the set matter, and for which methods?).

    .venv/bin/python benchmarks/choose_demonstrations.py --split 16-21 --out runs/demos-16-21.yaml \
        [--config configs/sst2_compare.yaml] [--set dtype=bfloat16 ...]

Every ordered pair of training examples, one per class (one demonstration per class, as
``task.demonstrations: 2``), goes before the template, filled with the manual prompt and its label word, as
``task.demonstrations`` writes it; the manual prompt then reads the other training examples behind it,
batch-calibrated. Pairs are ranked by the mean calibrated log-probability of the right label (accuracy on so
few examples ties), accuracy shown beside it. No dev or test input is read. Writes a config (``base:`` the
given one) whose ``task.template`` holds the best pair and whose ``task.exclude_train`` leaves it out of
training, and prints the ten best and the median pair. Two-class tasks only. 16-shot SST-2 (512 pairs x 30
examples): 22 minutes on 2 AVX-512 cores in bfloat16.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "sst2_compare.yaml"))
    p.add_argument("--split", required=True, help="the data seed, e.g. 16-21")
    p.add_argument("--set", action="append", default=[], help="config override, as for rlprompt.train")
    p.add_argument("--out", required=True, help="the config file to write")
    args = p.parse_args()

    import yaml
    from finished_runs import loglik as right_label_loglik

    from rlprompt.calibration import task_calibration
    from rlprompt.config import load_train_config
    from rlprompt.errors import RLPromptError
    from rlprompt.evaluation import evaluate_prompts, make_scorer, prompt_budget
    from rlprompt.kinds.classification import load, with_demonstrations

    # The task (verbalizers, exclusions checked) and its model, as a run loads them
    loaded = load(load_train_config(args.config, [f"task.seed={args.split}", *args.set]))
    task, lm, config = loaded.task, loaded.lm, loaded.config
    if task.num_classes != 2:
        raise RLPromptError(f"{task.name}: {task.num_classes} classes; this script pairs two")
    manual = config.manual_prompt_for(task)
    budget = prompt_budget(lm, [manual])
    train = task.training_examples(config.task.exclude_train)
    by_class = [[ex for ex in train if ex.label == c] for c in range(2)]
    pairs = [(a, b) for neg, pos in itertools.product(*by_class) for a, b in ((neg, pos), (pos, neg))]
    print(f"{len(pairs)} ordered pairs x {len(train) - 2} training examples each", file=sys.stderr)
    rows = []
    for i, shown in enumerate(pairs):
        # the template and exclusions task.demonstrations would write for this pair
        candidate = with_demonstrations(config, task, lm, shown)
        rest = task.training_examples(candidate.task.exclude_train)
        scorer = make_scorer(lm, task, candidate.task.template, prompt_budget=budget)
        (result,) = evaluate_prompts(scorer, rest, [manual], calibration=task_calibration("batch", task))
        loglik = right_label_loglik(result.scores, np.array([ex.label for ex in rest]))
        rows.append((loglik, result.metrics.accuracy, shown, candidate.task))
        if (i + 1) % 64 == 0:
            print(f"  {i + 1}/{len(pairs)}", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    for loglik, accuracy, shown, _ in rows[:10]:
        print(f"loglik {loglik:.3f}  accuracy {accuracy:.3f}  {[ex.uid for ex in shown]}")
    median = rows[len(rows) // 2]
    print(f"median pair: loglik {median[0]:.3f}  accuracy {median[1]:.3f}")
    loglik, accuracy, _, best = rows[0]
    out = {
        # relative to the written file, which is where a config's base is looked up
        "base": os.path.relpath(Path(args.config).resolve(), Path(args.out).resolve().parent),
        "task": {"seed": args.split, "template": best.template, "exclude_train": best.exclude_train},
    }
    Path(args.out).write_text(
        f"# benchmarks/choose_demonstrations.py --split {args.split}: the best of {len(rows)} pairs on the "
        f"training examples (manual prompt, calibrated log-likelihood {loglik:.3f}, "
        f"accuracy {accuracy:.3f}; --set {' '.join(args.set) or 'none'})\n"
        + yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
