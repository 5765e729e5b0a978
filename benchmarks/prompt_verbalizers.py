"""Would each learned prompt do better with label words of its own? TEMPERA edits the verbalizer along with
the prompt; the look-back form of that on a finished run: score the run's top prompts by dev once with every
word of a menu of label-word pairs, then give each prompt the pair that does best for it on the 64 training
and dev examples (accuracy, ties by the right label's log-likelihood; batch-calibrated, as the runs were),
and print the calibrated test accuracy of the run's top prompts as one ensemble (each member on its own
words), beside:

- ``own words``: the run's own words for every prompt (its artifact, rescored);
- ``per prompt, train+dev`` / ``per prompt, dev``: each prompt's best pair on the training and dev examples,
  or on dev alone (the training examples are the ones RL's reward read);
- ``one pair for the run, train+dev``: the pair under which the ensemble does best on the training and dev
  examples, for every member;
- ``best pair on test (oracle)``: the one pair that gives the ensemble the best test accuracy.

The prompts were learned with the run's own words, so a gain here is a reason to let training choose the
words, not a measurement of it. Look at development splits with it.

    .venv/bin/python benchmarks/prompt_verbalizers.py [--top 5] [--pair negative/positive ...] RUN...

``--pair`` (one class's word, ``/``, the other's; give it once a pair) replaces the menu, which by default is
the twelve SST-2 pairs of ``benchmarks/results/verbalizers_sst-2.md``. RUN is a run or a directory of
``rl__s*`` runs (one two-class task and model). Measured: benchmarks/results/rl_algorithms_sst-2/NOTES.md,
"Label words chosen per prompt".
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from finished_runs import Scorers, accuracy, finished_runs, loglik, top_prompts

from rlprompt.backends import make_label_scorer
from rlprompt.calibration import calibrate, log_prior
from rlprompt.config import load_train_config
from rlprompt.evaluation import ensemble_scores

SST2_PAIRS = (
    "negative/positive", "bad/great", "poor/perfect", "horrible/amazing", "awful/excellent", "worst/best",
    "terrible/great", "dull/brilliant", "bad/good", "boring/fun", "terrible/good", "no/yes",
)  # fmt: skip


def pair_scores(logprobs: np.ndarray, words: list[str], pair: str) -> np.ndarray:
    """(prompts, examples, 2) label scores of one ``a/b`` pair from the all-words log-probs."""
    return logprobs[..., [words.index(w) for w in pair.split("/")]]


def choose(scored: dict, labels: np.ndarray) -> str:
    """The pair whose scores are best on ``labels``: accuracy, then the right label's log-likelihood."""
    return max(scored, key=lambda pair: (accuracy(scored[pair], labels), loglik(scored[pair], labels)))


def run_rules(run, scorers: Scorers, top: int, pairs: list[str]) -> dict[str, float]:
    config = load_train_config(str(run / "config.yaml"))
    if config.calibration != "batch":
        sys.exit(f"prompt_verbalizers.py: {run} is calibrated {config.calibration!r}, not batch")
    task, scorer = scorers.get(config)
    if task.num_classes != 2:
        sys.exit(
            f"prompt_verbalizers.py: {run}: a two-class task is needed, {task.name} has {task.num_classes}"
        )
    own = "/".join(scorer.verbalizers)
    pairs = list(dict.fromkeys([own, *pairs]))
    words = list(dict.fromkeys(w for pair in pairs for w in pair.split("/")))
    word_scorer = make_label_scorer(
        scorer.lm, scorer.template.text, words, prompt_budget=scorer.encoder.prompt_budget
    )  # the run's room for the prompt, so long inputs are cut as the run cut them
    prompts = [tuple(p["token_ids"]) for p in top_prompts(run)[:top]]
    examples = {s: task.examples(s) for s in ("train", "dev", "test")}
    labels = {s: np.array([ex.label for ex in exs]) for s, exs in examples.items()}
    raw = {s: word_scorer.score(prompts, exs, progress=s == "test") for s, exs in examples.items()}
    # Batch calibration: each prompt's prior under each pair from the training and dev inputs.
    calibrated = {}
    for pair in pairs:
        reference = np.concatenate([pair_scores(raw[s], words, pair) for s in ("train", "dev")], 1)
        prior = log_prior(reference)
        calibrated[pair] = {s: calibrate(pair_scores(raw[s], words, pair), prior) for s in raw}
    both = np.concatenate([labels["train"], labels["dev"]])

    def on_both(pair: str, p: int) -> np.ndarray:
        return np.concatenate([calibrated[pair]["train"][p], calibrated[pair]["dev"][p]])

    def ensemble_test(choice: list[str]) -> float:
        members = [calibrated[pair]["test"][p] for p, pair in enumerate(choice)]
        return accuracy(ensemble_scores(members), labels["test"])

    per_prompt = [choose({pair: on_both(pair, p) for pair in pairs}, both) for p in range(len(prompts))]
    per_prompt_dev = [
        choose({pair: calibrated[pair]["dev"][p] for pair in pairs}, labels["dev"])
        for p in range(len(prompts))
    ]
    run_pair = choose(
        {pair: ensemble_scores([on_both(pair, p) for p in range(len(prompts))]) for pair in pairs}, both
    )
    by_test = {pair: ensemble_test([pair] * len(prompts)) for pair in pairs}
    row = {
        "run's artifact (result.json)": json.loads((run / "result.json").read_text())["test_metrics"][
            "accuracy"
        ],
        "own words": by_test[own],
        "per prompt, train+dev": ensemble_test(per_prompt),
        "per prompt, dev": ensemble_test(per_prompt_dev),
        "one pair for the run, train+dev": by_test[run_pair],
        "best pair on test (oracle)": max(by_test.values()),
    }
    print(
        run, {k: round(v, 4) for k, v in row.items()}, "per prompt:", per_prompt, "run:", run_pair, flush=True
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5, help="how many of each run's top prompts (default 5)")
    parser.add_argument("--pair", action="append", default=[], help="one pair of label words: 'bad/great'")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    for pair in args.pair:
        if len([w for w in pair.split("/") if w.strip()]) != 2:
            sys.exit(f"prompt_verbalizers.py: --pair {pair!r} must be two words separated by '/'")
    runs = finished_runs(args.runs)
    if not runs:
        sys.exit("prompt_verbalizers.py: no finished runs (prompt.json) under " + " ".join(args.runs))
    scorers = Scorers()
    rows = [run_rules(run, scorers, args.top, args.pair or list(SST2_PAIRS)) for run in runs]
    own = np.array([r["own words"] for r in rows])
    print(
        f"\nmean over {len(rows)} runs, calibrated test accuracy of each run's top {args.top} as one ensemble"
    )
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        delta = 100 * (values - own)
        spread = delta.std(ddof=1) / np.sqrt(len(delta))
        print(f"  {key:34s} {values.mean():.4f}  {delta.mean():+.1f} ± {spread:.1f} points against own words "
              f"(ahead on {(delta > 0).sum()} of {len(delta)})")  # fmt: skip


if __name__ == "__main__":
    main()
