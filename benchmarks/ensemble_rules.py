"""Which of a run's prompts should form its ensemble? A look back at finished RL or search runs of a
classification task, run with ``top_k_report`` of about 20 (``prompt.json``'s ``metrics.top_k_prompts``
then holds the 20 best prompts by dev). Each prompt is scored again on training, dev and test examples,
calibrated as the run was, and each rule's ensemble (the mean of its prompts' calibrated label
log-probabilities, as ``ensemble: k`` builds it) is scored on test:

- ``chosen``: the run's best prompt alone; ``ens3``, ``ens5``, ``ens10``, ``ens20``: the first k by dev;
- ``diverse3``, ``diverse5``: down the dev ranking, skipping a prompt that shares 3 or more distinct tokens
  with one already taken (near-copies add little to an ensemble);
- ``forward``: forward selection (with repeats, 7 picks from the best prompt) of the ensemble with the
  highest mean log-probability of the right label on training and dev examples pooled;

and beside them the best single prompt on test (an oracle). Look at development splits with it, not at
the split of the final table. Test scoring dominates: about 45 s a prompt on 1,821 SST-2 sentences, one
AVX2 thread.

    .venv/bin/python benchmarks/ensemble_rules.py RUN_DIR [RUN_DIR ...]

RUN_DIR is a comparison directory (its ``rl__s*`` and ``search__s*`` runs) or one run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rlprompt.backends import load_task_model
from rlprompt.calibration import task_calibration
from rlprompt.config import load_train_config
from rlprompt.evaluation import ensemble_scores, evaluate_prompts, make_scorer, normalised
from rlprompt.tasks import load_task


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(-1) == labels).mean())


def loglik(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(normalised(scores)[np.arange(len(labels)), labels].mean())


def diverse(prompts: list[tuple[int, ...]], k: int, shared: int = 3) -> list[int]:
    taken: list[int] = []
    for i, prompt in enumerate(prompts):
        if all(len(set(prompt) & set(prompts[j])) < shared for j in taken):
            taken.append(i)
        if len(taken) == k:
            break
    return taken


def forward(scores: list[np.ndarray], labels: np.ndarray, picks: int = 7) -> list[int]:
    chosen = [0]
    for _ in range(picks - 1):
        chosen.append(
            max(
                range(len(scores)),
                key=lambda c: loglik(ensemble_scores([scores[i] for i in chosen + [c]]), labels),
            )
        )
    return chosen


def run_rules(run: Path, top: list[dict], models: dict) -> dict[str, float]:
    """Each rule's test accuracy for ``run``, whose top prompts by dev are ``top``."""
    config = load_train_config(str(run / "config.yaml"))
    key = (config.task.name, config.task.seed, config.model, config.dtype)
    if key not in models:
        task = load_task(config.task.name, config.task.seed)
        lm = load_task_model(config.model, "cpu", config.dtype)
        models[key] = (
            task,
            make_scorer(lm, task, config.task.template, prompt_budget=config.env.prompt_length * 4),
        )
    task, scorer = models[key]
    calibration = task_calibration(config.calibration, task)
    prompts = [tuple(p["token_ids"]) for p in top]
    scores, labels = {}, {}
    for split in ("train", "dev", "test"):
        examples = task.examples(split)
        scores[split] = [
            r.scores for r in evaluate_prompts(scorer, examples, list(prompts), False, calibration)
        ]
        labels[split] = np.array([ex.label for ex in examples])
    pooled = [np.concatenate(pair) for pair in zip(scores["train"], scores["dev"], strict=True)]
    pooled_labels = np.concatenate([labels["train"], labels["dev"]])

    def test_of(members) -> float:
        return accuracy(ensemble_scores([scores["test"][i] for i in members]), labels["test"])

    single = [test_of([i]) for i in range(len(prompts))]
    row = {"chosen": single[0]}
    row |= {f"ens{k}": test_of(range(k)) for k in (3, 5, 10, 20) if k <= len(prompts)}
    row |= {f"diverse{k}": test_of(diverse(prompts, k)) for k in (3, 5)}
    row |= {"forward": test_of(forward(pooled, pooled_labels)), "best": max(single)}
    return row


def main(paths: list[str]) -> None:
    runs = []
    for path in map(Path, paths):
        runs += [path] if (path / "prompt.json").exists() else sorted(path.glob("*__s*"))
    rows, models = [], {}
    for run in runs:
        top = json.loads((run / "prompt.json").read_text())["metrics"].get("top_k_prompts", [])
        if len(top) < 5:
            print(f"{run}: fewer than 5 top prompts (run with --set top_k_report=20)")
            continue
        rows.append(run_rules(run, top, models))
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
