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
import json
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

import yaml

from rlprompt.backends import backend_of, load_task_model
from rlprompt.checkpoint import CHECKPOINT, StopRequest, load_checkpoint
from rlprompt.config import TrainConfig, load_train_config, to_dict
from rlprompt.console import add_verbose_flag
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.evaluate import make_scorer, prompt_budget
from rlprompt.files import atomic_write_bytes
from rlprompt.models import LanguageModel
from rlprompt.style import is_style_task
from rlprompt.tasks import SPLITS, Task, load_task

# What --resume --set may change: the step size, not what is learned or how it is scored.
RESUMABLE_KEYS = re.compile(r"(^|\.)(learning_rate|max_grad_norm)$")


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
    p.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint, with the config.yaml saved in it",
    )  # fmt: skip
    p.add_argument(
        "--run-dir", metavar="DIR", help="write the run here (default: a new directory in output_dir)"
    )
    p.add_argument("--overwrite", action="store_true", help="with --run-dir: replace an existing directory")
    p.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")
    p.add_argument("--list-methods", action="store_true", help="list the methods, what they learn and need")
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_methods:
        from rlprompt.registry import METHODS

        print("\n".join(spec.line() for spec in METHODS.values()))
        return 0
    overwrite = False
    if args.resume:
        if args.config or args.run_dir or args.overwrite:
            raise RLPromptError(
                "--resume continues with the run's own config.yaml: drop --config, --run-dir, --overwrite"
            )
        changed = [item for item in args.set if not RESUMABLE_KEYS.search(item.split("=", 1)[0].strip())]
        if changed:
            raise RLPromptError(
                f"--resume --set {changed[0]}: only learning rates and gradient clipping "
                "(keys ending in learning_rate or max_grad_norm) can change when a run resumes"
            )
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise RLPromptError(f"{run_dir}: not a run directory (no config.yaml)")
        config = load_train_config(str(run_dir / "config.yaml"), args.set)
    else:
        config = load_train_config(args.config, args.set)
        run_dir = Path(args.run_dir) if args.run_dir else None
        if run_dir is not None and run_dir.exists():
            if not run_dir.is_dir():
                raise RLPromptError(f"{run_dir}: exists and is not a directory")
            if any(run_dir.iterdir()):
                if not args.overwrite:
                    raise RLPromptError(
                        f"{run_dir}: run directory already exists; "
                        f"--resume {run_dir} continues it, --overwrite replaces it"
                    )
                overwrite = True
    result = train(
        config, progress=not args.quiet, run_dir=run_dir, resume=bool(args.resume), overwrite=overwrite,
        dry_run=args.dry_run,
    )  # fmt: skip
    print(result["summary"])
    if result["interrupted"]:
        print(
            f"interrupted: continue with  python -m rlprompt.train --resume {result['run_dir']}",
            file=sys.stderr,
        )
        return 130
    return 0


def train(
    config: TrainConfig, progress: bool = True, run_dir: Path | None = None, resume: bool = False,
    overwrite: bool = False, dry_run: bool = False,
) -> dict:  # fmt: skip
    """Run every configured method on every seed. Returns the run directory, the results and a summary
    (one run: also ``prompt`` and ``metrics`` of the RL prompt, for scripts that want them).

    ``run_dir``: where to write (default: a new directory under ``output_dir``); with ``resume``, runs that
    finished there are kept, an interrupted one continues from its checkpoint and the rest start;
    ``overwrite`` empties ``run_dir`` first (once the config has passed every check). ``dry_run``: check
    everything a run would check, return (and print) the plan, write nothing."""
    methods, seeds = config.method_list, config.seed_list
    single = len(methods) == 1 and len(seeds) == 1
    _check_capabilities(config, methods)
    if is_style_task(config.task.name):
        task, lm = _style_task_and_model(config)
        # Calibration removes a label prior; rewriting has no labels, so style runs score raw (and say so).
        config = dataclasses.replace(_resolved(config, lm), calibration="none")
        test_scorer = None  # rewrites are generated and scored by the style objective
    else:
        task = load_task(config.task.name, config.task.seed)
        for split in SPLITS:  # every split is read (and checked) before anything is written
            task.examples(split)
        lm = load_task_model(config.model, config.device, config.dtype)
        config = _resolved(config, lm)
        manual = config.manual_prompt if config.manual_prompt is not None else task.manual_prompt
        # One test scorer for the frozen LM with the task template: its sentence prefixes are computed once
        # and shared by every method that leaves the model unchanged. Its prompt budget fits every method.
        budget = max(
            config.env.prompt_length, config.soft_prompt.num_virtual_tokens, config.bbt.num_virtual_tokens,
            prompt_budget(lm, [manual, *config.manual_prompts]),
        )  # fmt: skip
        # Built before the run directory: it checks the template, the verbalizers and the prompt budget.
        test_scorer = make_scorer(lm, task, config.task.template, prompt_budget=budget, prefix_cache_mb=4096)
    plan = None
    if test_scorer is not None and (progress or dry_run) and not resume:
        from rlprompt.plan import format_plan, plan_run, probe_speed

        speed = probe_speed(test_scorer, task.examples("train"), len(lm.tokenizer), config.env.prompt_length)
        plan = format_plan(plan_run(config, task, speed), speed)
        print(plan, flush=True)
    if dry_run:
        return {"run_dir": None, "results": [], "interrupted": False, "plan": plan,
                "summary": "dry run: every check passed; nothing was written"}  # fmt: skip
    if run_dir is None:
        root = _new_run_dir(
            config, task, lm, methods[0] if single else "compare", seeds[0] if single else None
        )
    else:
        root = Path(run_dir)
        if overwrite:
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
    _write_config(config, root)  # when resuming: with any new learning rate
    record = getattr(task, "split_record", None)
    if record is not None:  # splits the task made itself (a split column, or carved): kept with the run
        atomic_write_bytes(root / "split.json", (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    cache: dict = {}
    results: list = []
    with StopRequest() as stop:
        try:
            for seed in seeds:
                for method in methods:
                    result = _run_one(
                        config, method, seed, task, lm, root, single, test_scorer, cache, progress, stop,
                        resume,
                    )  # fmt: skip
                    results.append(result)
                    if (result.interrupted or stop.requested) and not single:  # stop the comparison too
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if single or not results:
                raise
            print("\ninterrupted: the report covers the runs that finished", flush=True)
    unfinished = len(results) < len(seeds) * len(methods) or any(r.interrupted for r in results)
    if not single and test_scorer is not None and results:
        _write_references(config, task, test_scorer, root, progress)
    out = {"run_dir": root, "results": results, "interrupted": unfinished}
    if single:
        summary_file = root / "summary.txt"
        r = results[0]
        out["summary"] = (
            summary_file.read_text(encoding="utf-8").strip()
            if summary_file.exists()
            else f"run: {root}\n{r.method}: dev accuracy {r.dev_accuracy:.3f}   "
            f"test accuracy {r.test_accuracy:.3f}"
        )
        if r.method in ("rl", "search"):  # what the run reports about its prompt (summary, --json)
            from rlprompt.export import load_prompt

            exported = load_prompt(root / "prompt.json")
            out["prompt"], out["metrics"] = exported, exported.metrics
    else:
        from rlprompt.report import write_report

        report = write_report([root], root)
        out["summary"] = f"run: {root}\n\n{report}"
    return out


def _write_references(config: TrainConfig, task: Task, test_scorer, root: Path, progress: bool) -> None:
    """The manual and empty prompts on test, raw and calibrated, for the comparison report (their scores
    are in the shared test scorer's cache when a prompt method has run)."""
    from rlprompt.calibration import reference_method
    from rlprompt.evaluate import reference_results
    from rlprompt.methods import REFERENCES

    manual = config.manual_prompt if config.manual_prompt is not None else task.manual_prompt
    references = reference_results(test_scorer, task, manual, reference_method(config.calibration), progress)
    atomic_write_bytes(root / REFERENCES, (json.dumps(references, indent=2) + "\n").encode("utf-8"))


def _resolved(config: TrainConfig, lm: LanguageModel) -> TrainConfig:
    """The config with the device and dtype that ``auto`` resolved to: config.yaml records what ran (a
    server's are its own business; the policy's backbone still runs here, as configured)."""
    if backend_of(lm.name).name != "hf":
        return config
    return dataclasses.replace(config, device=lm.device, dtype=lm.dtype)


def _check_capabilities(config: TrainConfig, methods: list[str]) -> None:
    """Every method can run on the task LM's backend: one clear error before anything is loaded."""
    from rlprompt.backends import Capability, require
    from rlprompt.methods import NEEDS, STYLE_NEEDS

    for method in methods:
        names = STYLE_NEEDS if is_style_task(config.task.name) else NEEDS[method]
        needed = Capability(0)
        for name in names:
            needed |= Capability[name]
        require(
            config.model, needed, f"method {method!r}" + (" (style transfer)" if names is STYLE_NEEDS else "")
        )


def _style_task_and_model(config: TrainConfig):
    """A style-transfer task and its causal task LM, with every setting checked before a run starts."""
    from rlprompt.models import _bundle_directory
    from rlprompt.style import ENCODER_BUNDLE, load_style_task

    task = load_style_task(config.task.name, config.task.seed, config.style.target, config.style.dev_inputs)
    _bundle_directory(ENCODER_BUNDLE)  # the content scorer's bundle is installed (else: how to install it)
    try:
        import sacrebleu  # noqa: F401 - the test report needs it; say so now, not after training
    except ImportError:
        raise RLPromptError("style transfer needs sacrebleu for BLEU: pip install sacrebleu") from None
    lm = load_task_model(config.model, config.device, config.dtype)
    if lm.kind != "causal":
        raise RLPromptError(
            f"style transfer generates rewrites, so it needs a causal model; {lm.name} is a {lm.kind} model"
        )
    if config.task.template is not None:
        raise RLPromptError(
            f"task.template does not apply to {config.task.name!r}: rewrites use RLPrompt's template "
            '{prompt} "{sentence}" "'
        )
    if config.rl.polish_rounds:
        raise RLPromptError("rl.polish_rounds applies to classification tasks only; set it to 0")
    other = [m for m in config.method_list if m != "rl"]
    if other:
        raise RLPromptError(
            f"method {other[0]!r} does not apply to the style-transfer task {config.task.name!r}: it has no "
            "labels to train on; use method: rl (the empty and manual prompts are evaluated with it)"
        )
    return task, lm


def _run_one(config, method, seed, task, lm, root: Path, single, test_scorer, cache, progress, stop, resume):
    """One method on one seed, in its own run directory (the root one for a single run). When resuming,
    a finished run is read back, an interrupted one continues from its checkpoint."""
    from stable_baselines3.common.utils import set_random_seed

    from rlprompt.methods import MethodContext, run_method

    run_dir = root
    if not single:
        run_dir = root / f"{method}__s{seed}"
        run_dir.mkdir(exist_ok=resume)
        _write_config(dataclasses.replace(config, method=method, methods=[], seed=seed, seeds=[]), run_dir)
    state = None
    if resume:
        finished = _finished_result(run_dir)
        if finished is not None:
            if single:
                raise RLPromptError(f"{run_dir}: this run finished; nothing to resume")
            print(f"{method} seed {seed}: finished before, kept", flush=True)
            return finished
        state = load_checkpoint(run_dir)
        if state is not None and state.get("method") != method:
            raise RLPromptError(
                f"{run_dir}/{CHECKPOINT}: a checkpoint of {state.get('method')!r}, not {method!r}"
            )
        print(
            f"{method} seed {seed}: " + (f"resuming at step {state['step']}" if state else "starting"),
            flush=True,
        )
    set_random_seed(seed)
    context = MethodContext(config, seed, task, lm, run_dir, test_scorer, progress, cache, stop, state)
    result = run_method(method, context)
    print(
        f"{method} seed {seed}: dev {result.dev_accuracy:.3f} test {result.test_accuracy:.3f} "
        f"({result.learned}) in {result.train_seconds:.0f} s",
        flush=True,
    )
    return result


def _finished_result(run_dir: Path):
    """The result of a run that finished (None for one interrupted, or whose result.json is unreadable)."""
    from rlprompt.methods import MethodResult

    try:
        result = MethodResult.load(run_dir / "result.json")
    except (OSError, ValueError, TypeError):
        return None
    return None if result.interrupted else result


def _write_config(config: TrainConfig, run_dir: Path) -> None:
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_bytes(run_dir / "config.yaml", text.encode("utf-8"))  # --resume reads it back


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
