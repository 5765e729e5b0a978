"""The training driver: ``python -m rlprompt.train --config configs/quickstart.yaml [--set k=v ...]``.

One method (``method: rl``, the default) on one seed writes one run directory,
``runs/<task>__<method>__<model>__s<seed>__<time>/``. Several methods (``methods: [rl, soft_prompt, ...]``)
or seeds (``seeds: [0, 1, 2]``) write a comparison directory, ``runs/<task>__compare__<model>__<time>/``,
with one sub-directory per method and seed, ``report.md`` and ``learning_curves.png``
(see :mod:`rlprompt.comparison`). Every run directory holds its resolved ``config.yaml``, ``metrics.jsonl``
(one line per dev evaluation), its artifact, ``result.json`` and, for RL, ``summary.txt``. All methods share
the data split, the evaluation schedule (``evaluations`` evenly spaced dev evaluations) and the Scorer; see
:mod:`rlprompt.methods`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from rlprompt.config import load_resumed_config, load_train_config, read_config_file
from rlprompt.console import add_verbose_flag
from rlprompt.driver import require_previous_run, train
from rlprompt.errors import ArgumentParser, RLPromptError, ServiceUnavailable, run_cli
from rlprompt.files import DirectoryLock, check_output_dir

# What --resume --set may change: the step size, and where the runs execute; not what is learned or how it
# is scored.
RESUMABLE_KEYS = re.compile(r"(^|\.)(learning_rate|max_grad_norm)$|^executor$|^ray\.")


def _parser() -> ArgumentParser:
    p = ArgumentParser(
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
    p.add_argument(
        "--overwrite", action="store_true",
        help="with --run-dir: replace an existing run directory (one holding a config.yaml)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")
    p.add_argument("--list-methods", action="store_true", help="list the methods, what they learn and need")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="where a grid's runs execute (the config's executor key; ray: README, grids on a cluster)",
    )
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.config is not None and not args.config.strip():  # (an unset shell variable, say)
        raise RLPromptError("--config is empty: name a config file, or leave --config out for the defaults")
    if args.executor:
        args.set = [*args.set, f"executor={args.executor}"]
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
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise RLPromptError(f"{run_dir}: no such run directory")
        if not (run_dir / "config.yaml").is_file():
            raise RLPromptError(f"{run_dir}: not a run directory (no config.yaml)")
        changed = [item for item in args.set if not _resumable(item, run_dir / "config.yaml")]
        if changed:
            raise RLPromptError(
                f"--resume --set {changed[0]}: only learning rates and gradient clipping (keys ending in "
                "learning_rate or max_grad_norm) and where runs execute (executor, ray.*, a server model's "
                "address and request options) can change when a run resumes"
            )
        config = load_resumed_config(run_dir / "config.yaml", args.set)
    else:
        if args.overwrite and not args.run_dir:
            raise RLPromptError("--overwrite replaces the directory --run-dir names: give --run-dir too")
        config = load_train_config(args.config, args.set)
        run_dir = check_output_dir(args.run_dir, "--run-dir") if args.run_dir else None
        if (
            run_dir is not None
            and run_dir.exists()
            and any(
                p.name != DirectoryLock.NAME
                for p in run_dir.iterdir()  # (a run in it is named by the lock)
            )
        ):
            if not args.overwrite:
                raise RLPromptError(
                    f"{run_dir}: run directory already exists; "
                    f"--resume {run_dir} continues it, --overwrite replaces it"
                )
            require_previous_run(run_dir)  # --overwrite deletes the directory: runs only
            overwrite = True
    try:
        result = train(
            config, progress=not args.quiet, run_dir=run_dir, resume=bool(args.resume), overwrite=overwrite,
            dry_run=args.dry_run,
        )  # fmt: skip
    except KeyboardInterrupt as stopped:  # a second signal: the driver names the directory it stopped in
        if getattr(stopped, "run_dir", None) is None:
            raise  # before any run directory existed: nothing to resume
        return _interrupted(stopped.run_dir)
    except ServiceUnavailable as lost:  # mid-run: its last checkpoint is kept
        if getattr(lost, "run_dir", None) is None:
            raise
        print(f"error: {lost}", file=sys.stderr)
        print(f"stopped: once the server answers again, continue with  python -m rlprompt.train --resume "
              f"{lost.run_dir}  (a new address: --set model=...)", file=sys.stderr)  # fmt: skip
        return 1
    print(result["summary"])
    if result.get("failed"):
        names = ", ".join(f"{f['method']} seed {f['seed']}" for f in result["failed"])
        print(
            f"{len(result['failed'])} run(s) failed ({names}; see failure.json in each): fix the cause and "
            f"rerun them with  python -m rlprompt.train --resume {result['run_dir']}",
            file=sys.stderr,
        )
        if any(f.get("refused") for f in result["failed"]):  # the error named a setting or an input
            print(
                "a resume keeps each run's settings but learning rates, gradient clipping, where runs "
                "execute and a server's address: if an error above names another setting, change it in the "
                "config and start a new run",
                file=sys.stderr,
            )
        return 1
    if result["interrupted"]:
        return _interrupted(result["run_dir"])
    return 0


def _resumable(item: str, config_file: Path) -> bool:
    """Whether ``--resume --set item`` may change the run: a key of :data:`RESUMABLE_KEYS`, or a server
    model (``openai:...``) that names the same served model and tokenizer as the recorded one (a restarted
    server has a new port, say)."""
    key, _, value = item.partition("=")
    if RESUMABLE_KEYS.search(key.strip()):
        return True
    if key.strip() != "model":
        return False
    from rlprompt.backends.openai import same_served_model

    try:
        new = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return False  # load_train_config names what is wrong with it
    recorded = (read_config_file(config_file) or {}).get("model")
    return isinstance(new, str) and isinstance(recorded, str) and same_served_model(recorded, new)


def _interrupted(run_dir: Path) -> int:
    """A stopped run's last line, the same whether it stopped cleanly or at once: how to continue it."""
    print(f"interrupted: continue with  python -m rlprompt.train --resume {run_dir}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    run_cli(main)
