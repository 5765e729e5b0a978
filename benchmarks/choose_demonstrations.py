"""Choose a task's demonstrations on its training examples instead of drawing them (the question behind
TEMPERA's learned in-context examples: does the set matter, and for which methods?).

    .venv/bin/python benchmarks/choose_demonstrations.py --split 16-21 --out runs/demos-16-21.yaml \
        [--config configs/sst2_compare.yaml] [--max-sets 512] [--set dtype=bfloat16 ...]

A candidate set holds one training example per class (as ``task.demonstrations`` set to the number of
classes draws), in some order. Each goes before the template, filled with the manual prompt and its label
word, as ``task.demonstrations`` writes it; the manual prompt then reads the other training examples behind
it, batch-calibrated. Sets are ranked by the mean calibrated log-probability of the right label (accuracy on
so few examples ties), accuracy shown beside it. No dev or test input is read. Every ordered set is scored
when there are at most ``--max-sets`` of them (two classes, 16 examples each: 512), else a seeded sample of
that many distinct sets. Writes a config (``base:`` the given one, plus the ``--set`` overrides the sets were
scored under; the split is ``--split``, and another task is ``task.name=``) whose ``task.template`` holds the
best set and whose ``task.exclude_train`` leaves it out of training, and prints the ten best and the median
set.
16-shot SST-2 (512 pairs x 30 examples): 22 minutes on 2 AVX-512 cores in bfloat16.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import yaml
from finished_runs import loglik as right_label_loglik

from rlprompt.calibration import task_calibration
from rlprompt.config import load_train_config, overrides_mapping
from rlprompt.evaluation import evaluate_prompts, make_scorer, prompt_budget
from rlprompt.kinds.classification import load, with_demonstrations

ROOT = Path(__file__).resolve().parents[1]


def candidate_sets(train: list, num_classes: int, max_sets: int, seed: int = 0) -> list[tuple]:
    """Ordered sets of one training example per class: all of them when there are at most ``max_sets``,
    else ``max_sets`` distinct ones drawn with ``seed``."""
    by_class = [[ex for ex in train if ex.label == c] for c in range(num_classes)]
    if not all(by_class):
        missing = [c for c in range(num_classes) if not by_class[c]]
        raise ValueError(f"no training example of class {missing[0]}: a set needs one of each")
    orders = list(itertools.permutations(range(num_classes)))
    total = math.prod(map(len, by_class)) * len(orders)
    if total <= max_sets:
        return [tuple(one[c] for c in order) for one in itertools.product(*by_class) for order in orders]
    rng, drawn = random.Random(seed), {}
    while len(drawn) < max_sets:
        one = [rng.choice(examples) for examples in by_class]
        order = rng.choice(orders)
        shown = tuple(one[c] for c in order)
        drawn.setdefault(tuple(ex.uid for ex in shown), shown)
    return list(drawn.values())


def manual_prompt_score(config, task, lm, template: str, exclude_train) -> tuple[float, float]:
    """The right label's mean log-likelihood and the accuracy of the manual prompt under ``template``, on the
    training examples outside ``exclude_train``, batch-calibrated."""
    manual = config.manual_prompt_for(task)
    rest = task.training_examples(exclude_train)
    scorer = make_scorer(lm, task, template, prompt_budget=prompt_budget(lm, [manual]))
    (result,) = evaluate_prompts(scorer, rest, [manual], calibration=task_calibration("batch", task))
    return right_label_loglik(result.scores, np.array([ex.label for ex in rest])), result.metrics.accuracy


def rank_sets(config, task, lm, sets: list[tuple], progress=None) -> list[tuple]:
    """(right-label log-likelihood, accuracy, set, the task config behind it) for each set, best first: the
    manual prompt behind the set's demonstrations, on the training examples the set leaves."""
    rows = []
    for i, shown in enumerate(sets):
        # the template and exclusions task.demonstrations would write for this set
        candidate = with_demonstrations(config, task, lm, shown).task
        rows.append((*manual_prompt_score(config, task, lm, candidate.template, candidate.exclude_train),
                     shown, candidate))  # fmt: skip
        if progress:
            progress(i + 1, len(sets))
    return sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "sst2_compare.yaml"))
    p.add_argument("--split", required=True, help="the data seed, e.g. 16-21")
    p.add_argument("--max-sets", type=int, default=512, help="score a seeded sample when there are more sets")
    p.add_argument("--set", action="append", default=[], help="config override, as for rlprompt.train")
    p.add_argument("--out", required=True, help="the config file to write")
    args = p.parse_args(argv)
    if args.max_sets < 1:
        p.error(f"--max-sets must be at least 1, got {args.max_sets}")

    # The written config repeats the --set overrides (checked here, before any scoring); --split is the split.
    settings = overrides_mapping(args.set)
    if {"seed", "seeds"} & set(settings.get("task", {})):
        p.error("the data split is --split, not --set task.seed or task.seeds")
    # The task (verbalizers, exclusions checked) and its model, as a run loads them
    loaded = load(load_train_config(args.config, [*args.set, f"task.seed={args.split}"]))
    task, lm, config = loaded.task, loaded.lm, loaded.config
    train = task.training_examples(config.task.exclude_train)
    try:
        sets = candidate_sets(train, task.num_classes, args.max_sets, seed=config.seed)
    except ValueError as e:
        print(f"{task.name}: {e}", file=sys.stderr)
        return 2
    left = len(train) - task.num_classes
    print(f"{len(sets)} ordered sets x {left} training examples each", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if done % 64 == 0 or done == total:
            print(f"  {done}/{total}", file=sys.stderr, flush=True)

    rows = rank_sets(config, task, lm, sets, progress)
    for loglik, accuracy, shown, _ in rows[:10]:
        print(f"loglik {loglik:.3f}  accuracy {accuracy:.3f}  {[ex.uid for ex in shown]}")
    median = rows[len(rows) // 2]
    print(f"median set: loglik {median[0]:.3f}  accuracy {median[1]:.3f}")
    loglik, accuracy, _, best = rows[0]
    # The --set overrides become settings: the set was chosen for that model, those words, that template.
    task_settings = {**settings.pop("task", {}), "seed": args.split, "template": best.template,
                     "exclude_train": best.exclude_train}  # fmt: skip
    out = {
        # relative to the written file, which is where a config's base is looked up
        "base": os.path.relpath(Path(args.config).resolve(), Path(args.out).resolve().parent),
        **settings,
        "task": task_settings,
    }
    Path(args.out).write_text(
        f"# benchmarks/choose_demonstrations.py --split {args.split}: the best of {len(rows)} sets on the "
        f"training examples (manual prompt, calibrated log-likelihood {loglik:.3f}, "
        f"accuracy {accuracy:.3f}; --set {' '.join(args.set) or 'none'})\n"
        + yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from rlprompt.errors import run_cli

    run_cli(main)  # a bad config or override: one line, exit 2
