"""Which of a run's prompts should form its ensemble? A look back at finished RL or search runs of a
classification task, run with ``top_k_report`` of about 20 (``prompt.json``'s ``metrics.top_k_prompts``
then holds the 20 best prompts by dev). Each prompt is scored again on training, dev and test examples,
calibrated as the run was, and each rule's ensemble (the mean of its prompts' calibrated label
log-probabilities, as ``ensemble: k`` builds it) is scored on test:

- ``chosen``: the run's best prompt by dev accuracy alone (the first; RL's own choice before
  ``rl.prompt_rule``); ``ens3``, ``ens5``, ``ens10``, ``ens20``: the first k by dev;
- ``diverse3``, ``diverse5``: down the dev ranking, skipping a prompt that shares 3 or more distinct tokens
  with one already taken (near-copies add little to an ensemble);
- ``gap1``, ``gap3``, ``gap5``: the first 1, 3 or 5 by dev gap reward alone (RLPrompt's reward on dev,
  the tie-breaker of the dev ranking) rather than by dev accuracy first;
- ``forward``: forward selection (with repeats, 7 picks from the best prompt) of the ensemble with the
  highest mean log-probability of the right label on training and dev examples pooled;

and with ``--oracle`` also ``ens10``, ``ens20`` and the best single prompt on test (an oracle); these
score every prompt on test. Look at development splits with it, not at the split of the final table.
Test scoring dominates: about 45 s a prompt on 1,821 SST-2 sentences, one AVX2 thread; only the prompts
some rule takes are scored there.

    .venv/bin/python benchmarks/ensemble_rules.py [--oracle] RUN_DIR [RUN_DIR ...]

RUN_DIR is a comparison directory (its ``rl__s*`` and ``search__s*`` runs) or one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from finished_runs import Scorers, accuracy, ensemble_accuracy, finished_runs, forward, top_prompts
from rlprompt.envs.prompt_env import gap_reward

from rlprompt.calibration import task_calibration
from rlprompt.config import load_train_config
from rlprompt.evaluation import evaluate_prompts


def diverse(prompts: list[tuple[int, ...]], k: int, shared: int = 3) -> list[int]:
    taken: list[int] = []
    for i, prompt in enumerate(prompts):
        if all(len(set(prompt) & set(prompts[j])) < shared for j in taken):
            taken.append(i)
        if len(taken) == k:
            break
    return taken


def run_rules(run: Path, top: list[dict], scorers: Scorers, oracle: bool = False) -> dict[str, float]:
    """Each rule's test accuracy for ``run``, whose top prompts by dev are ``top``; test scores only the
    prompts some rule takes (all of them with ``oracle``)."""
    config = load_train_config(str(run / "config.yaml"))
    task, scorer = scorers.get(config)  # the run's dtype, so that its figures match the run's
    calibration = task_calibration(config.calibration, task)
    prompts = [tuple(p["token_ids"]) for p in top]
    scores, labels = {}, {}
    for split in ("train", "dev"):
        examples = task.examples(split)
        scores[split] = [
            r.scores for r in evaluate_prompts(scorer, examples, list(prompts), False, calibration)
        ]
        labels[split] = np.array([ex.label for ex in examples])
    pooled = [np.concatenate(pair) for pair in zip(scores["train"], scores["dev"], strict=True)]
    pooled_labels = np.concatenate([labels["train"], labels["dev"]])
    dev_gap = gap_reward(np.stack(scores["dev"]), labels["dev"], config.env.correct_scale,
                         config.env.wrong_scale)  # fmt: skip
    by_gap = [int(i) for i in np.argsort(-dev_gap, kind="stable")]
    n = len(prompts)
    members = {"chosen": [0]}
    members |= {f"ens{k}": list(range(k)) for k in (3, 5, 10, 20) if k <= n and (k <= 5 or oracle)}
    members |= {f"diverse{k}": diverse(prompts, k) for k in (3, 5)}
    members |= {"gap1": by_gap[:1], "gap3": by_gap[:3], "gap5": by_gap[:5]}
    members["forward"] = forward(pooled, pooled_labels, 7, start=(0,))
    wanted = sorted(set(range(n)) if oracle else {i for taken in members.values() for i in taken})
    test_examples = task.examples("test")
    test_labels = np.array([ex.label for ex in test_examples])
    results = evaluate_prompts(scorer, test_examples, [prompts[i] for i in wanted], False, calibration)
    test = {i: r.scores for i, r in zip(wanted, results, strict=True)}
    row = {rule: ensemble_accuracy(test, test_labels, taken) for rule, taken in members.items()}
    if oracle:
        row["best"] = max(accuracy(test[i], test_labels) for i in range(n))
    return row


def main(args: list[str]) -> None:
    oracle = "--oracle" in args
    paths = [a for a in args if a != "--oracle"]
    rows, scorers = [], Scorers()
    for run in finished_runs(paths):
        top = top_prompts(run)
        if len(top) < 5:
            print(f"{run}: fewer than 5 top prompts (run with --set top_k_report=20)")
            continue
        rows.append(run_rules(run, top, scorers, oracle))
        print(f"{run}: " + "  ".join(f"{rule} {value:.3f}" for rule, value in rows[-1].items()), flush=True)
    if len(rows) > 1:
        chosen = np.array([r["chosen"] for r in rows])
        print(
            f"over {len(rows)} runs (test accuracy; against the chosen prompt, ± standard error over runs):"
        )
        for rule in rows[0]:
            values = np.array([r.get(rule, np.nan) for r in rows])
            gain = values - chosen
            print(
                f"  {rule:9s} {np.nanmean(values):.3f}  {np.nanmean(gain):+.3f} ± "
                f"{np.nanstd(gain, ddof=1) / np.sqrt(len(gain)):.3f}  ahead on {int((gain > 0).sum())}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
