"""What each calibration method does to test accuracy: prompts x models x methods, scored once.

    .venv/bin/python benchmarks/calibration.py [--models smollm2-135m gemma3-270m] [--task sst-2]
        [--prompt-file runs/.../prompt.json ...] [--out benchmarks/results]

Every prompt (the task's manual prompt, the empty prompt and any exported prompts) is scored once on the
test set of each model; each calibration method then estimates the prompt's prior on that model from its
own reference inputs (see rlprompt/calibration.py) and the accuracy is recomputed. Writes
``calibration_<task>.md`` and ``.json``. SmolLM2 and Gemma on SST-2 test with the two reference prompts:
about 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("none", "batch", "contextual", "domain", "transductive")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    p.add_argument("--task", default="sst-2")
    p.add_argument("--seed", default="16-100", help="few-shot data seed (its train and dev inputs)")
    p.add_argument("--prompt-file", nargs="*", default=[], help="exported prompt.json files to add")
    p.add_argument("--dtype", default="float32", help="the models' precision (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()

    from rlprompt.backends import load_task_model
    from rlprompt.calibration import calibrate, scorer_prior, task_calibration
    from rlprompt.evaluation import make_scorer, prompt_budget
    from rlprompt.export import load_classification_prompt
    from rlprompt.files import atomic_write_bytes
    from rlprompt.metrics import classification_metrics
    from rlprompt.tables import markdown_table
    from rlprompt.tasks import load_task

    task = load_task(args.task, args.seed)
    test = task.examples("test")
    labels = np.array([ex.label for ex in test])
    files = [load_classification_prompt(f) for f in args.prompt_file]
    rows: list[dict] = []
    for model in args.models:
        lm = load_task_model(model, "auto", args.dtype)
        named = [(f"manual {task.manual_prompt!r}", task.manual_prompt), ("empty prompt", "")]
        named += [(f"{f.method} s{f.seed} {f.text!r} ({f.model})", f.prompt_for(lm.name)) for f in files]
        prompts = [p for _, p in named]
        scorer = make_scorer(lm, task, prompt_budget=prompt_budget(lm, prompts))
        logprobs = scorer.score(prompts, test, progress=sys.stderr.isatty())
        for method in METHODS:
            prior = scorer_prior(scorer, prompts, task_calibration(method, task), evaluated=test)
            calibrated = calibrate(logprobs, prior)
            for (name, _), scores in zip(named, calibrated, strict=True):
                accuracy = classification_metrics(scores, labels).accuracy
                rows.append({"model": lm.name, "prompt": name, "calibration": method, "accuracy": accuracy})
        print(f"{lm.name}: done", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Calibration on {task.name} test ({len(test)} examples; priors from data seed {args.seed}; "
        f"{args.dtype})",
        "",
    ]
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for prompt in dict.fromkeys(r["prompt"] for r in rows if r["model"] == model):
            mine = [r for r in rows if (r["model"], r["prompt"]) == (model, prompt)]
            cells = {r["calibration"]: r["accuracy"] for r in mine}
            table.append([model, prompt, *(f"{cells[m]:.3f}" for m in METHODS)])
    lines.append(markdown_table(["model", "prompt", *METHODS], table))
    text = "\n".join(lines) + "\n"
    stem = f"calibration_{task.name}" + ("" if args.dtype == "float32" else f"_{args.dtype}")
    atomic_write_bytes(out / f"{stem}.md", text.encode("utf-8"))
    atomic_write_bytes(out / f"{stem}.json", (json.dumps(rows, indent=1) + "\n").encode("utf-8"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
