"""Would several label words per class lift a finished run's prompts? Scores each run's top prompts by dev
(its artifact's members) once with every word named, then reads each class's score off a *set* of words,
two ways: ``sum`` (the class words' total probability, a log-sum-exp of their log-probs) and ``mean`` (the
mean of their log-probs, a geometric mean). Each variant is batch-calibrated as the runs were (each prompt's
prior from the task's unlabelled training and dev inputs) and printed as the calibrated test accuracy of the
top prompts' ensemble and of the prompts alone (their mean), beside the runs' own words, whose ensemble
figure repeats the run's ``result.json`` when ``--top`` is the run's ``ensemble`` and the dtype its own.

The prompts were learned and chosen with the runs' own words, so this is a look-back screen: a gain here is
a reason to train with the sets, not a measurement of it. Look at development splits with it.

    .venv/bin/python benchmarks/label_word_sets.py [--top 5] --words "negative,bad/positive,great" ... RUN...

``--words`` gives one set of words per class, classes separated by ``/`` in label order, the words of a class
by ``,``; give it once per variant. RUN is a run or a directory of ``rl__s*`` runs (one task and model).
Measured: benchmarks/results/rl_algorithms_sst-2/NOTES.md, "Several label words per class".
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from finished_runs import Scorers, accuracy, finished_runs, top_prompts

from rlprompt.backends import make_label_scorer
from rlprompt.calibration import calibrate, log_prior, task_calibration
from rlprompt.config import load_train_config
from rlprompt.evaluation import ensemble_scores


def parse_word_sets(text: str, classes: int) -> list[list[str]]:
    """``"negative,bad/positive,great"`` as one word list per class; exits with a one-line message when the
    class count is wrong or a class has no word."""
    sets = [[w.strip() for w in part.split(",") if w.strip()] for part in text.split("/")]
    if len(sets) != classes or not all(sets):
        sys.exit(f"label_word_sets.py: --words {text!r} must give {classes} word sets, separated by '/'")
    return sets


def class_scores(logprobs: np.ndarray, columns: list[list[int]], how: str) -> np.ndarray:
    """(..., classes) scores from (..., words) log-probs: per class, the log of its words' summed probability
    (``sum``) or the mean of their log-probs (``mean``)."""
    reduce = {"sum": lambda x: np.logaddexp.reduce(x, axis=-1), "mean": lambda x: x.mean(-1)}[how]
    return np.stack([reduce(logprobs[..., cols]) for cols in columns], axis=-1)


def calibrated_accuracies(reference: np.ndarray, test: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Batch-calibrated test accuracy of the prompts' ensemble and the mean of theirs alone, from (prompts,
    examples, classes) scores on the reference (training and dev) and test inputs."""
    calibrated = calibrate(test, log_prior(reference))
    alone = [accuracy(c, labels) for c in calibrated]
    return accuracy(ensemble_scores(calibrated), labels), float(np.mean(alone))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5, help="how many of each run's top prompts (default 5)")
    parser.add_argument("--words", action="append", default=[], help="one word set per class: 'a,b/c,d'")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    runs = finished_runs(args.runs)
    if not runs:
        sys.exit("label_word_sets.py: no finished runs (prompt.json) under " + " ".join(args.runs))
    scorers, table = Scorers(), {}
    for run in runs:
        config = load_train_config(str(run / "config.yaml"))
        if config.calibration != "batch":
            sys.exit(f"label_word_sets.py: {run} is calibrated {config.calibration!r}, not batch")
        task, scorer = scorers.get(config)
        variants = {"own words": [[w] for w in scorer.verbalizers]}
        variants |= {text: parse_word_sets(text, task.num_classes) for text in args.words}
        words = list(dict.fromkeys(w for sets in variants.values() for ws in sets for w in ws))
        # the run's test scorer's room for the prompt, so that long inputs are cut as the run cut them
        word_scorer = make_label_scorer(
            scorer.lm, scorer.template.text, words, prompt_budget=scorer.encoder.prompt_budget
        )
        prompts = [tuple(p["token_ids"]) for p in top_prompts(run)[: args.top]]
        reference = word_scorer.score(prompts, task_calibration("batch", task).unlabelled)
        test_examples = task.examples("test")
        test = word_scorer.score(prompts, test_examples, progress=True)
        labels = np.array([ex.label for ex in test_examples])
        row = {"run's artifact": json.loads((run / "result.json").read_text())["test_metrics"]["accuracy"]}
        for name, sets in variants.items():
            columns = [[words.index(w) for w in ws] for ws in sets]
            for how in ("sum", "mean") if any(len(ws) > 1 for ws in sets) else ("sum",):
                row[f"{name} ({how})" if name != "own words" else name] = calibrated_accuracies(
                    class_scores(reference, columns, how), class_scores(test, columns, how), labels
                )
        table[str(run)] = row
        print(run, {k: np.round(v, 4).tolist() for k, v in row.items()}, flush=True)
    print(f"\nmean over {len(table)} runs: ensemble of each run's top {args.top} (or fewer kept) | alone")
    rows = list(table.values())
    for key in [k for k in rows[0] if k != "run's artifact"]:
        ensemble, alone = np.mean([r[key] for r in rows], axis=0)
        print(f"  {key:40s} {ensemble:.4f} | {alone:.4f}")
    artifacts = np.mean([r["run's artifact"] for r in rows])
    label = "the runs' artifacts (result.json)"
    print(f"  {label:40s} {artifacts:.4f}")


if __name__ == "__main__":
    main()
