"""Is the RL ensemble limited by the prompts RL finds or by how it picks them? Pools the top prompts of
several finished runs on one data split (e.g. every RL screen's runs on 16-13), scores each once on
training, dev and test examples, calibrated as the runs were, and prints the test accuracy of:

- ``runs``: each run's own artifact (its ensemble of ``ensemble`` prompts, from its ``result.json``), and
  their mean;
- ``pool mean`` and ``best single``: the pooled prompts' mean and best test accuracy (the latter an oracle);
- ``first 5 by dev``: the 5 pooled prompts with the best dev accuracy (dev log-likelihood breaking ties),
  as one ensemble: what the config's rule would pick from all the runs' budget together;
- ``forward 5, train+dev``: forward selection of 5 (with repeats) on the pooled training and dev
  log-likelihood of the right label, no test input;
- ``top 5 by agreement``: the 5 pooled prompts that agree most with the consensus of all of them (the
  argmax of the whole pool's ensemble) on the training and dev inputs, their labels unread (dev accuracy
  breaking ties);
- ``all``: the ensemble of every pooled prompt;
- ``oracle 5``: forward selection of 5 on test accuracy itself (an upper bound for any ensemble of 5 of
  these prompts; ties by test log-likelihood);
- how the first 5 by dev combine: the mean of their label log-probs (the product's ensemble), of their
  probabilities, a majority vote, and the mean of their label margins, each divided by its typical size
  (root mean square) on the training and dev inputs (so a prompt with sharp scores weighs no more than one
  with mild ones), and
  the mean log-probs after each prompt takes the class bias that fits its training labels best;
- the correlation over the pooled prompts between test accuracy and each signal that reads no test input
  (agreement, dev accuracy, training+dev accuracy);

and, to see whether more labelled examples to choose on would find the better ensembles, the same rules
plus the first 5 by accuracy and forward selection on a seeded half of the test set, all scored on the
other half.

Look at development splits with it, not at the split of the final table. Scoring dominates (a few seconds a
prompt on the training and dev examples, 10-20 on 1,821 test sentences on 2 AVX-512 cores in bf16).

    .venv/bin/python benchmarks/prompt_pool.py [--save SCORES.npz] RUN_DIR [RUN_DIR ...]
    .venv/bin/python benchmarks/prompt_pool.py SCORES.npz

``--save`` keeps every pooled prompt's label scores on each split (with the labels and prompt texts); given
that file instead of runs, the script reads the scores from it and scores nothing.

Measured: benchmarks/results/rl_algorithms_sst-2/NOTES.md (README "Pooled prompts").

RUN_DIR is a run or a directory of ``rl__s*`` runs; all must share the task, split, template and model.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from finished_runs import (
    Scorers,
    accuracy,
    agreement,
    ensemble_accuracy,
    finished_runs,
    forward,
    load_scores,
    loglik,
    save_scores,
    top_prompts,
)

from rlprompt.calibration import normalised, task_calibration
from rlprompt.config import load_train_config
from rlprompt.evaluation import evaluate_prompts


def accuracy_then_loglik(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    return accuracy(scores, labels), loglik(scores, labels)


def pooled_scores(paths: list[str], save: str | None) -> tuple[list[str], dict, dict]:
    """The pooled prompts' texts and their (examples, classes) label scores and labels on each split,
    scored now (and kept in ``save``) or, for one ``.npz`` path, read from an earlier ``--save``."""
    if len(paths) == 1 and paths[0].endswith(".npz"):
        return load_scores(paths[0])
    runs = finished_runs(paths)
    if not runs:
        sys.exit("prompt_pool.py: no finished runs (prompt.json) under " + " ".join(paths))
    configs = [load_train_config(str(run / "config.yaml")) for run in runs]
    keys = {
        (c.task.name, c.task.seed, c.task.template, c.model, tuple(c.task.verbalizers or ())) for c in configs
    }
    if len(keys) > 1:
        sys.exit(f"prompt_pool.py: the runs differ in task, split, template or model: {sorted(keys)}")
    task, scorer = Scorers().get(configs[0])
    calibration = task_calibration(configs[0].calibration, task)
    pool: dict[tuple[int, ...], str] = {}
    own = []
    for run in runs:
        for p in top_prompts(run):
            pool.setdefault(tuple(p["token_ids"]), p["text"])
        own.append(json.loads((run / "result.json").read_text())["test_metrics"]["accuracy"])  # the artifact
    prompts = list(pool)
    print(f"{len(runs)} runs, {len(prompts)} distinct prompts; runs' own ensembles "
          f"{np.round(own, 3).tolist()}, mean {np.mean(own):.3f}", flush=True)  # fmt: skip
    scores, labels = {}, {}
    for split in ("train", "dev", "test"):
        examples = task.examples(split)
        scores[split] = [
            r.scores for r in evaluate_prompts(scorer, examples, prompts, split == "test", calibration)
        ]
        labels[split] = np.array([ex.label for ex in examples])
    texts = [pool[p] for p in prompts]
    if save:
        save_scores(save, texts, scores, labels)
    return texts, scores, labels


def main(paths: list[str], save: str | None = None) -> None:
    texts, scores, labels = pooled_scores(paths, save)
    n = len(texts)
    test = [accuracy(s, labels["test"]) for s in scores["test"]]
    dev = [accuracy_then_loglik(s, labels["dev"]) for s in scores["dev"]]
    by_dev = sorted(range(n), key=lambda i: dev[i], reverse=True)
    pooled = [np.concatenate(pair) for pair in zip(scores["train"], scores["dev"], strict=True)]
    pooled_labels = np.concatenate([labels["train"], labels["dev"]])
    agrees = agreement(pooled)
    by_agreement = sorted(range(n), key=lambda i: (agrees[i], dev[i]), reverse=True)
    members = {
        "first 5 by dev": by_dev[:5],
        "forward 5, train+dev": forward(pooled, pooled_labels, 5, loglik),
        "top 5 by agreement": by_agreement[:5],
        "all": list(range(n)),
        "oracle 5": forward(scores["test"], labels["test"], 5, accuracy_then_loglik),
    }
    best = int(np.argmax(test))
    print(f"pool mean {np.mean(test):.3f}; best single {test[best]:.3f} ({texts[best]!r}, "
          f"dev {dev[best][0]:.3f})")  # fmt: skip
    for rule, taken in members.items():
        members_test = f"members' test {[round(test[i], 3) for i in taken]}" if len(taken) <= 5 else ""
        print(f"{rule:22s} {ensemble_accuracy(scores['test'], labels['test'], taken):.3f}  {members_test}")
    # How well each no-test signal ranks the pooled prompts by test accuracy.
    signals = {"agreement": agrees, "dev accuracy": [d[0] for d in dev],
               "training+dev accuracy": [accuracy(s, pooled_labels) for s in pooled]}  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant signal has no correlation (nan)
        corr = {name: np.corrcoef(signal, test)[0, 1] for name, signal in signals.items()}
    combinations(scores, labels, by_dev[:5])
    print("correlation with test accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in corr.items()))
    more_labels(scores, labels, by_dev, members)


def combinations(scores: dict, labels: dict, taken: list[int]) -> dict[str, float]:
    """Test accuracy of the ``taken`` prompts' ensemble under four ways of combining their (calibrated)
    label scores, and a fifth that recalibrates each with labels first, printed on one line and returned;
    the margins' size is read on training and dev."""
    test = np.stack([normalised(scores["test"][i]) for i in taken])
    reference = np.stack([normalised(np.concatenate([scores["train"][i], scores["dev"][i]])) for i in taken])
    y = labels["test"]
    votes = np.stack([np.eye(test.shape[-1])[t.argmax(-1)] for t in test]).mean(0)
    # Each prompt's log-probs divided by the typical size (root mean square) of its margin over the
    # runner-up class on the reference inputs: a prompt sure of everything weighs what a mild one does.
    size = np.sqrt(((reference.max(-1) - np.sort(reference, -1)[..., -2]) ** 2).mean(-1))
    size = np.maximum(size, 1e-9)
    # Each prompt's class bias fitted to its training labels (dev is left to choose on), on top of the
    # label-free calibration: does knowing the labels correct a prompt's lean further?
    relabelled = [
        normalised(t + labelled_bias(scores["train"][i], labels["train"]))
        for t, i in zip(test, taken, strict=True)
    ]
    figures = {
        "log-probs": test.mean(0),
        "probabilities": np.exp(test).mean(0),
        "vote": votes + 1e-6 * test.mean(0),  # ties go to the mean log-prob
        "scaled margins": (test / size[:, None, None]).mean(0),
        "labelled bias": np.mean(relabelled, axis=0),
    }
    accuracies = {name: accuracy(combined, y) for name, combined in figures.items()}
    print("first 5 by dev, combined by " + ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()))
    return accuracies


def labelled_bias(scores: np.ndarray, labels: np.ndarray, steps: int = 500) -> np.ndarray:
    """The class bias that maximises the labels' mean log-likelihood under ``normalised(scores + bias)``
    (gradient ascent; the objective is concave in the bias)."""
    bias, onehot = np.zeros(scores.shape[-1]), np.eye(scores.shape[-1])[labels]
    for _ in range(steps):
        bias += (onehot - np.exp(normalised(scores + bias))).mean(0)
    return bias - bias.mean()


def more_labels(scores: dict, labels: dict, by_dev: list[int], members: dict) -> None:
    """Would more labelled examples to choose on find the better ensembles? A seeded half of the test set
    stands in for a large selection set; every rule is scored on the other half."""
    order = np.random.default_rng(0).permutation(len(labels["test"]))
    chose_on, scored_on = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    pick = [s[chose_on] for s in scores["test"]]
    held = [s[scored_on] for s in scores["test"]]
    pick_labels, held_labels = labels["test"][chose_on], labels["test"][scored_on]
    by_half = sorted(range(len(pick)), key=lambda i: accuracy_then_loglik(pick[i], pick_labels), reverse=True)
    rules = {
        "first 5 by dev": by_dev[:5],
        "forward 5, train+dev": members["forward 5, train+dev"],
        "top 5 by agreement": members["top 5 by agreement"],
        "all": members["all"],
        f"first 5 by {len(chose_on)} labelled": by_half[:5],
        f"forward 5 on {len(chose_on)} labelled": forward(pick, pick_labels, 5, loglik),
        "oracle 5 on these": forward(held, held_labels, 5, accuracy_then_loglik),
    }
    print(f"chosen on {len(chose_on)} test sentences (seeded half), scored on the other {len(scored_on)}:")
    for rule, taken in rules.items():
        print(f"  {rule:28s} {ensemble_accuracy(held, held_labels, taken):.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    save = None
    if args[:1] == ["--save"]:
        if len(args) < 2:
            sys.exit("prompt_pool.py: --save needs a file name")
        save, args = args[1], args[2:]
    main(args, save)
