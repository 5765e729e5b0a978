"""Which label words to read a task through: the manual and empty prompts, calibrated, under candidate
verbalizers, on development data only.

    .venv/bin/python benchmarks/verbalizers.py [--task sst-2] [--model smollm2-135m]
        [--splits 16-13 16-21 16-42 16-87] [--pairs negative/positive bad/good ...] [--out DIR]

For each candidate (one word per class, "/"-separated in class order) and each development split, the
task's manual prompt and the empty prompt are scored on that split's training and dev inputs together
(64 for 16-shot SST-2) and batch-calibrated as a run calibrates them; the table gives each prompt's
accuracy averaged over the splits. No test input is read, and the final split (16-100) is left out by
default, so a choice made here can be tested there afterwards (`task.verbalizers` in a run config).
Writes ``verbalizers_<task>.md`` and ``.json``. The default twelve pairs on SST-2 took 27 minutes on 2
AVX2 cores, niced and sharing them with a training run for most of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT_PAIRS = [
    "terrible/great", "bad/good", "negative/positive", "awful/excellent", "boring/fun", "bad/great",
    "terrible/good", "worst/best", "horrible/amazing", "poor/perfect", "dull/brilliant", "no/yes",
]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="sst-2")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--splits", nargs="+", default=["16-13", "16-21", "16-42", "16-87"])
    p.add_argument("--pairs", nargs="+", default=SENTIMENT_PAIRS, help="candidates, e.g. negative/positive")
    p.add_argument("--dtype", default="float32", help="the model's precision (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()

    from rlprompt.backends import load_task_model
    from rlprompt.calibration import task_calibration
    from rlprompt.errors import RLPromptError
    from rlprompt.evaluation import evaluate_prompts, make_scorer, prompt_budget
    from rlprompt.files import atomic_write_bytes
    from rlprompt.tables import markdown_table
    from rlprompt.tasks import load_task

    lm = load_task_model(args.model, "auto", args.dtype)
    tasks = {split: load_task(args.task, split) for split in args.splits}
    manual = next(iter(tasks.values())).manual_prompt
    prompts = [manual, ""]
    rows = []
    for pair in args.pairs:
        words = pair.split("/")
        accuracy = []  # per split: [manual, empty]
        for task in tasks.values():
            if len(words) != task.num_classes:
                raise RLPromptError(f"--pairs {pair!r}: {task.name} needs {task.num_classes} words")
            task.verbalizers = words
            inputs = task.examples("train") + task.examples("dev")
            scorer = make_scorer(lm, task, prompt_budget=prompt_budget(lm, prompts))
            results = evaluate_prompts(scorer, inputs, prompts, calibration=task_calibration("batch", task))
            accuracy.append([r.metrics.accuracy for r in results])
        mean = np.mean(accuracy, axis=0)
        rows.append({"verbalizers": words, "manual": float(mean[0]), "empty": float(mean[1]),
                     "per_split": {s: a for s, a in zip(args.splits, accuracy, strict=True)}})  # fmt: skip
        print(f"{pair:22s} manual {mean[0]:.3f}  empty {mean[1]:.3f}", file=sys.stderr, flush=True)

    rows.sort(key=lambda r: r["manual"] + r["empty"], reverse=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"verbalizers_{args.task}"
    meta = {"task": args.task, "model": lm.name, "dtype": args.dtype, "splits": args.splits,
            "inputs": "train + dev of each split", "calibration": "batch",
            "manual_prompt": manual}  # fmt: skip
    atomic_write_bytes(out / f"{name}.json", (json.dumps({**meta, "rows": rows}, indent=1) + "\n").encode())
    table = markdown_table(
        ["verbalizers", f"manual {manual!r}", "empty prompt", "mean"],
        [["/".join(r["verbalizers"]), f"{r['manual']:.3f}", f"{r['empty']:.3f}",
          f"{(r['manual'] + r['empty']) / 2:.3f}"] for r in rows],
    )  # fmt: skip
    text = (f"# Verbalizers for {args.task} on {lm.name} ({args.dtype})\n\nBatch-calibrated accuracy on the "
            f"training and dev inputs of splits {', '.join(args.splits)} (mean over the splits), best first; "
            "no test input read.\n\n" + table + "\n")  # fmt: skip
    atomic_write_bytes(out / f"{name}.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
