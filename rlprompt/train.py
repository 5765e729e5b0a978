"""The training driver: ``python -m rlprompt.train --config configs/quickstart.yaml [--set k=v ...]``.

One method (``method: rl``, the default) on one seed writes one run directory,
``runs/<task>__<method>__<model>__s<seed>__<time>/``. Several methods (``methods: [rl, soft_prompt, ...]``)
or seeds (``seeds: [0, 1, 2]``) write a comparison directory, ``runs/<task>__compare__<model>__<time>/``,
with one sub-directory per method and seed, ``report.md`` and ``learning_curves.png``
(see :mod:`rlprompt.report`). Every run directory holds its resolved ``config.yaml``, ``metrics.jsonl``
(one line per dev evaluation), its artifact, ``result.json`` and, for RL, ``summary.txt``. All methods share
the data split, the evaluation schedule (``evaluations`` evenly spaced dev evaluations) and the Scorer; see
:mod:`rlprompt.methods`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from datetime import datetime
from pathlib import Path

import yaml

from rlprompt.config import TrainConfig, load_train_config, to_dict
from rlprompt.errors import run_cli
from rlprompt.evaluate import make_scorer, prompt_budget
from rlprompt.models import LanguageModel, load_model
from rlprompt.tasks import Task, load_task


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlprompt.train",
        description="Learn a discrete prompt with RL, and compare it with baselines.",
    )
    p.add_argument("--config", help="YAML run configuration (default: the built-in defaults)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_train_config(args.config, args.set)
    result = train(config, progress=not args.quiet)
    print(result["summary"])
    return 0


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Run every configured method on every seed. Returns the run directory, the results and a summary
    (one run: also ``prompt`` and ``metrics`` of the RL prompt, for scripts that want them)."""
    task = load_task(config.task.name, config.task.seed)
    lm = load_model(config.model)
    methods, seeds = config.method_list, config.seed_list
    single = len(methods) == 1 and len(seeds) == 1
    root = _new_run_dir(config, task, lm, methods[0] if single else "compare", seeds[0] if single else None)
    _write_config(config, root)
    manual = config.manual_prompt if config.manual_prompt is not None else task.manual_prompt
    # One test scorer for the frozen LM with the task template: its sentence prefixes are computed once
    # and shared by every method that leaves the model unchanged. Its prompt budget fits every method.
    budget = max(
        config.env.prompt_length, config.soft_prompt.num_virtual_tokens,
        prompt_budget(lm, [manual, *config.manual_prompts]),
    )  # fmt: skip
    test_scorer = make_scorer(lm, task, config.task.template, prompt_budget=budget, prefix_cache_mb=4096)
    cache: dict = {}
    results: list = []
    try:
        for seed in seeds:
            for method in methods:
                result = _run_one(config, method, seed, task, lm, root, single, test_scorer, cache, progress)
                results.append(result)
                if result.interrupted and not single:  # Ctrl-C stopped its training: stop the comparison
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if single or not results:
            raise
        print("\ninterrupted: the report covers the runs that finished", flush=True)
    out = {"run_dir": root, "results": results}
    if single:
        summary_file = root / "summary.txt"
        r = results[0]
        out["summary"] = (
            summary_file.read_text(encoding="utf-8").strip()
            if summary_file.exists()
            else f"run: {root}\n{r.method}: dev accuracy {r.dev_accuracy:.3f}   "
            f"test accuracy {r.test_accuracy:.3f}"
        )
        if r.method == "rl":
            from rlprompt.export import load_prompt

            exported = load_prompt(root / "prompt.json")
            out["prompt"], out["metrics"] = exported, exported.metrics
    else:
        from rlprompt.report import write_report

        report = write_report([root], root)
        out["summary"] = f"run: {root}\n\n{report}"
    return out


def _run_one(config, method, seed, task, lm, root: Path, single: bool, test_scorer, cache, progress):
    """One method on one seed, in its own run directory (the root one for a single run)."""
    from stable_baselines3.common.utils import set_random_seed

    from rlprompt.methods import MethodContext, run_method

    run_dir = root
    if not single:
        run_dir = root / f"{method}__s{seed}"
        run_dir.mkdir()
        _write_config(dataclasses.replace(config, method=method, methods=[], seed=seed, seeds=[]), run_dir)
    set_random_seed(seed)
    result = run_method(method, MethodContext(config, seed, task, lm, run_dir, test_scorer, progress, cache))
    print(
        f"{method} seed {seed}: dev {result.dev_accuracy:.3f} test {result.test_accuracy:.3f} "
        f"({result.learned}) in {result.train_seconds:.0f} s",
        flush=True,
    )
    return result


def _write_config(config: TrainConfig, run_dir: Path) -> None:
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def _new_run_dir(config: TrainConfig, task: Task, lm: LanguageModel, method: str, seed: int | None) -> Path:
    def clean(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name or name).strip("-") or "x"

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    seed_part = f"__s{seed}" if seed is not None else ""
    name = f"{clean(task.name)}__{method}__{clean(lm.name)}{seed_part}__{stamp}"
    run_dir = Path(config.output_dir) / name
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.output_dir) / f"{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


if __name__ == "__main__":
    run_cli(main)
