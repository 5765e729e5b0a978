"""How well would other rules have chosen among a run's best prompts? A look back at finished RL or search
runs of a classification task, run with ``top_k_report`` of about 10 (``prompt.json``'s
``metrics.top_k_prompts`` then holds the 10 best prompts by dev accuracy, each with its test accuracy).

For each run the top prompts are scored again on the training and dev examples (cheap: 10 prompts x 64
examples), calibrated as the run was, and each rule picks one of them:

- ``dev``: the best by dev accuracy (then the dev reward), the first prompt: the run's own choice where
  it ran with ``prompt_rule: dev_accuracy`` (every run before ``rl.prompt_rule``; search);
- ``dev_reward``: the highest dev reward (the run's ``env.reward``, the gap reward by default: less coarse
  than accuracy on 32 examples) among all kept prompts;
- ``dev_reward_3``, ``dev_reward_5``: the same among the first 3 (``rl.prompt_rule: top_3_dev_reward``,
  RL's choice since) or 5;
- ``dev_ll``: the highest mean log-probability of the right label on dev;
- ``pooled``: accuracy on training and dev examples together (then both gap rewards);
- ``train``: training accuracy alone (what the reward optimised: biased upwards);

and beside them the top-3 mean (RLPrompt's figure), the mean of all of them (top_all) and the best
(an oracle).
Look at development splits with it, not at the split of the final table.

    .venv/bin/python benchmarks/selection_rules.py RUN_DIR [RUN_DIR ...]

RUN_DIR is a comparison directory (its ``rl__s*`` and ``search__s*`` runs) or one run. Saved outputs
pool without scoring again: ``python benchmarks/selection_rules.py --pool OUT.txt [OUT.txt ...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from finished_runs import Scorers, finished_runs, top_prompts
from rlprompt.envs.prompt_env import batch_accuracy, label_reward, loglik_reward

from rlprompt.calibration import calibrate, scorer_prior, task_calibration
from rlprompt.config import load_train_config


def split_scores(scorer, prompts, examples, calibration, env) -> dict[str, np.ndarray]:
    labels = np.array([ex.label for ex in examples])
    logprobs = scorer.score(prompts, examples)
    # The run's own dev scoring: calibrated with the prior from the unlabelled training and dev inputs.
    logprobs = calibrate(logprobs, scorer_prior(scorer, prompts, calibration))
    return {
        "accuracy": batch_accuracy(logprobs, labels),
        "reward": label_reward(logprobs, labels, env.reward, env.correct_scale, env.wrong_scale),
        "loglik": loglik_reward(logprobs, labels),
        "n": np.full(len(prompts), len(examples)),
    }


def choices(train: dict, dev: dict) -> dict[str, int]:
    n = len(dev["accuracy"])
    pooled = (train["accuracy"] * train["n"] + dev["accuracy"] * dev["n"]) / (train["n"] + dev["n"])
    return {
        "dev": 0,
        "dev_reward": int(np.argmax(dev["reward"])),
        "dev_reward_3": int(np.argmax(dev["reward"][:3])),
        "dev_reward_5": int(np.argmax(dev["reward"][:5])),
        "dev_ll": int(np.argmax(dev["loglik"])),
        "pooled": max(range(n), key=lambda i: (pooled[i], train["reward"][i] + dev["reward"][i])),
        "train": max(range(n), key=lambda i: (train["accuracy"][i], train["reward"][i])),
    }


def summarise(picked: dict[str, list[float]]) -> None:
    """The mean test accuracy of each rule's picks, and each dev-reward rule against the run's own choice."""
    print(f"mean over {len(picked['dev'])} runs: "
          + "  ".join(f"{rule} {np.mean(values):.3f}" for rule, values in picked.items()))  # fmt: skip
    for rule in ("dev_reward", "dev_reward_3", "dev_reward_5", "dev_ll"):
        gains = np.array(picked[rule]) - np.array(picked["dev"])
        if len(gains) > 1:
            error = gains.std(ddof=1) / np.sqrt(len(gains))
            print(
                f"{rule} - dev: {gains.mean():+.3f} +- {error:.3f} (standard error over runs); "
                f"ahead on {(gains > 0).sum()}, behind on {(gains < 0).sum()} of {len(gains)}"
            )


def pool(outputs: list[str]) -> dict[str, list[float]]:
    """The per-run lines of earlier outputs of this script (``RUN: rule value ...``), pooled without scoring
    again."""
    picked: dict[str, list[float]] = {}
    for output in outputs:
        for line in Path(output).read_text().splitlines():
            run, _, figures = line.partition(": ")
            if not run or run.startswith("mean over") or " - dev:" in line or "no top-k" in figures:
                continue
            words = figures.split()
            for rule, value in zip(words[::2], words[1::2], strict=True):
                picked.setdefault(rule, []).append(float(value))
    return picked


def main(paths: list[str]) -> None:
    if paths[:1] == ["--pool"]:
        summarise(pool(paths[1:]))
        return
    picked: dict[str, list[float]] = {}
    scorers = Scorers()
    for run in finished_runs(paths):
        top = top_prompts(run)
        if len(top) < 2 or "test" not in top[0]:
            print(f"{run}: no top-k prompts with test scores (run with --set top_k_report=10)")
            continue
        config = load_train_config(str(run / "config.yaml"))
        task, scorer = scorers.get(config, "float32")
        calibration = task_calibration(config.calibration, task)
        prompts = [tuple(p["token_ids"]) for p in top]
        train, dev = (split_scores(scorer, prompts, task.examples(s), calibration, config.env)
                      for s in ("train", "dev"))  # fmt: skip
        test = np.array([p["test"] for p in top])
        row = {rule: float(test[i]) for rule, i in choices(train, dev).items()}
        row |= {
            "top3": float(test[:3].mean()),
            "top_all": float(test.mean()),
            "best": float(test.max()),
        }
        for rule, value in row.items():
            picked.setdefault(rule, []).append(value)
        print(f"{run}: " + "  ".join(f"{rule} {value:.3f}" for rule, value in row.items()))
    if picked:
        summarise(picked)


if __name__ == "__main__":
    main(sys.argv[1:])
