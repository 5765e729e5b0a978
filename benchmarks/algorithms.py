"""PPO, A2C and soft Q-learning on the quickstart task with the same budget of reward queries.

    .venv/bin/python benchmarks/algorithms.py [--queries 50000] [--seeds 0 1 2] [--out benchmarks/results]

Each algorithm trains the same token policy on ``configs/quickstart.yaml`` until it has scored
``--queries`` (prompt, example) pairs (training and dev; a prompt written again is free) or reached the
step limit. Writes ``algorithms.md`` (best dev accuracy and test accuracy of the final prompt, mean ± std
over seeds, wall time) and ``algorithms.png`` (best dev accuracy against reward queries).
Run by hand: at 20,000 queries a run takes 2 to 7 minutes (with its test evaluation) on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--queries", type=int, default=50_000, help="reward queries per run (default: %(default)s)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", default=["ppo", "a2c", "sql"])
    p.add_argument("--steps", type=int, default=40_000, help="step limit per run (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--set", action="append", default=[], help="extra config overrides (key=value)")
    args = p.parse_args()

    from rlprompt.config import load_train_config
    from rlprompt.driver import train
    from rlprompt.files import atomic_write_bytes
    from rlprompt.tables import markdown_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for algo in args.algos:
        for seed in args.seeds:
            # The quickstart's restarts and self-imitation are PPO and A2C features that SQL refuses.
            own = ["rl.restart_window=0", "rl.imitate_top=0"] if algo == "sql" else []
            # float32 on any CPU: the stored comparison was measured in it (auto is bf16 on native-bf16 CPUs).
            overrides = ["dtype=float32", f"rl.algo={algo}", f"seed={seed}",
                         f"max_reward_queries={args.queries}", f"total_timesteps={args.steps}",
                         f"output_dir={out / 'algorithm-runs'}", *own, *args.set]  # fmt: skip
            config = load_train_config(str(ROOT / "configs" / "quickstart.yaml"), overrides)
            done = train(config, progress=sys.stderr.isatty())
            result = done["results"][0]
            metrics = Path(done["run_dir"]) / "metrics.jsonl"
            curve = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
            rows.setdefault(algo, []).append((result, curve))
            print(f"{algo} seed {seed}: best dev {result.dev_score:.3f} test {result.test_score:.3f} "
                  f"in {result.train_seconds:.0f} s", flush=True)  # fmt: skip
    table = []
    for algo, runs in rows.items():
        results = [r for r, _ in runs]

        def stat(values):
            return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"

        dev, test = stat([r.dev_score for r in results]), stat([r.test_score for r in results])
        steps, seconds = np.mean([r.steps for r in results]), np.mean([r.train_seconds for r in results])
        table.append([algo, dev, test, f"{steps:.0f}", f"{seconds:.0f} s"])
    lines = [
        f"# RL algorithms on the quickstart task ({args.queries:,} reward queries, seeds {args.seeds})", "",
        markdown_table(["algo", "best dev accuracy", "test accuracy", "steps", "train time"], table),
    ]  # fmt: skip
    atomic_write_bytes(out / "algorithms.md", ("\n".join(lines) + "\n").encode("utf-8"))
    document = json.dumps({a: [r.__dict__ for r, _ in rs] for a, rs in rows.items()}, indent=1)
    atomic_write_bytes(out / "algorithms.json", document.encode("utf-8"))
    _plot(rows, out / "algorithms.png")
    print("\n".join(lines))
    return 0


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (algo, runs) in enumerate(rows.items()):
        for j, (_, curve) in enumerate(runs):
            xs = [p["reward_queries"] for p in curve]
            ax.plot(xs, [p["best_dev_score"] for p in curve], color=f"C{i}", alpha=0.8,
                    label=algo if j == 0 else None)  # fmt: skip
    ax.set_xlabel("reward queries (prompt, example pairs scored)")
    ax.set_ylabel("best dev accuracy so far")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
