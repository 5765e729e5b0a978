"""Learn a discrete prompt: ``python -m rlprompt.train --config configs/quickstart.yaml [--set k=v ...]``.

The policy writes prompts in a ``PromptVecEnv``; every ``eval_every`` env steps the greedy prompt and the
best training prompts since the last evaluation are scored on dev, and the best so far is kept (and
exported at once, so an interrupted run still leaves a valid ``prompt.json``). At the end the best prompt
and the manual prompt are evaluated on test. Everything goes to
``runs/<task>__<method>__<model>__s<seed>__<time>/``: the resolved config, ``metrics.jsonl``, TensorBoard
events, ``prompt.json``, the trained policy (``policy.zip``: trainable weights and the backbone's name)
and ``summary.txt``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from rlprompt import __version__
from rlprompt.config import TrainConfig, load_train_config, to_dict
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.evaluate import evaluate_prompts, make_scorer, prompt_budget
from rlprompt.export import LearnedPrompt, save_prompt
from rlprompt.models import LanguageModel, load_model
from rlprompt.tasks import Task, load_task
from rlprompt.vocab import action_vocabulary


@dataclass
class Candidate:
    """A prompt with its dev scores; compared by accuracy, then by the (less noisy) gap reward."""

    ids: tuple[int, ...]
    text: str
    dev_accuracy: float
    dev_reward: float
    step: int

    @property
    def key(self) -> tuple[float, float]:
        return (self.dev_accuracy, self.dev_reward)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlprompt.train", description="Learn a discrete prompt with RL."
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
    """Run one training job; returns the run directory, the best prompt and the summary text."""
    from stable_baselines3.common.utils import set_random_seed

    task = load_task(config.task.name, config.task.seed)
    lm = load_model(config.model)
    manual = config.manual_prompt if config.manual_prompt is not None else task.manual_prompt
    # Sentences get all the room but what the longest prompt scored here (learned or manual) needs.
    budget = max(config.env.prompt_length, prompt_budget(lm, [manual]))
    scorer = make_scorer(lm, task, config.task.template, prompt_budget=budget)
    train_examples, dev_examples = task.examples("train"), task.examples("dev")
    test_examples = task.examples("test")
    vocab = action_vocabulary(lm, config.vocab.kind, config.vocab.size, config.vocab.tokens)
    backbone = config.policy.backbone or config.model
    _check_same_tokenizer(lm, load_model(backbone))

    run_dir = _new_run_dir(config, task, lm)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    set_random_seed(config.seed)
    env = _make_env(config, scorer, train_examples, vocab)
    model = _make_algorithm(config, env, vocab, backbone, run_dir)
    tracker = _Tracker(config, scorer, dev_examples, env, model, run_dir, task, progress)
    start = time.perf_counter()
    interrupted = False
    try:
        try:
            model.learn(total_timesteps=config.total_timesteps, callback=tracker.callback())
        except KeyboardInterrupt:
            interrupted = True
            print(
                f"\ninterrupted at step {model.num_timesteps}: evaluating the best prompt so far", flush=True
            )
        if not interrupted and tracker.last_eval_step != model.num_timesteps:
            tracker.evaluate(model.num_timesteps)
    finally:
        tracker.close()
    train_seconds = time.perf_counter() - start
    # Only the trainable adapter, value head and logit gain (with their optimizer state) are saved; the
    # backbone is recorded by name in the policy's constructor arguments.
    model.save(run_dir / "policy.zip")

    best = tracker.best
    if best is None:
        raise RLPromptError(f"interrupted before the first evaluation: no prompt to export in {run_dir}")
    reward_queries = int(scorer.stats.pairs_scored)  # training and dev; test scoring comes next
    test, manual_test = (
        r.metrics for r in evaluate_prompts(scorer, test_examples, [best.ids, manual], progress)
    )
    metrics = {
        "dev_accuracy": best.dev_accuracy,
        "test_accuracy": test.accuracy,
        "test_macro_f1": test.macro_f1,
        "manual_prompt": manual,
        "manual_test_accuracy": manual_test.accuracy,
        "found_at_step": best.step,
        "steps": int(model.num_timesteps),
        "train_seconds": round(train_seconds, 1),
        "reward_queries": reward_queries,
    }
    save_prompt(tracker.exported(best, metrics), run_dir / "prompt.json")
    summary = (
        f"run: {run_dir}\n"
        f"prompt: {best.text!r}  (token ids {list(best.ids)})\n"
        f"dev accuracy {best.dev_accuracy:.3f}   test accuracy {test.accuracy:.3f}   "
        f"manual prompt {manual!r}: test accuracy {manual_test.accuracy:.3f}\n"
        f"{model.num_timesteps} steps in {train_seconds:.0f} s, {reward_queries} reward queries"
        + (" (interrupted)" if interrupted else "")
    )
    (run_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    return {"run_dir": run_dir, "prompt": best, "metrics": metrics, "summary": summary}


def _check_same_tokenizer(task_lm: LanguageModel, backbone: LanguageModel) -> None:
    if backbone is task_lm:
        return
    if backbone.tokenizer.get_vocab() != task_lm.tokenizer.get_vocab():
        raise RLPromptError(
            f"policy.backbone {backbone.name!r} has a different tokenizer from the task model "
            f"{task_lm.name!r}; "
            "the policy writes the task model's token ids, so they must share one"
        )


def _new_run_dir(config: TrainConfig, task: Task, lm: LanguageModel) -> Path:
    def clean(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name or name).strip("-") or "x"

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{clean(task.name)}__{config.method}__{clean(lm.name)}__s{config.seed}__{stamp}"
    run_dir = Path(config.output_dir) / name
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.output_dir) / f"{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def _make_env(config: TrainConfig, scorer, train_examples, vocab):
    from rlprompt.envs.prompt_env import PromptVecEnv

    env_cfg = config.env
    return PromptVecEnv(
        scorer, train_examples, vocab, num_envs=env_cfg.num_envs, prompt_length=env_cfg.prompt_length,
        examples_per_reward=env_cfg.examples_per_reward, correct_scale=env_cfg.correct_scale,
        wrong_scale=env_cfg.wrong_scale, normalize=env_cfg.normalize, seed=config.seed,
    )  # fmt: skip


def _make_algorithm(config: TrainConfig, env, vocab, backbone: str, run_dir: Path):
    from stable_baselines3 import A2C, PPO

    from rlprompt.policies.token_policy import TokenPolicy

    rl = config.rl
    policy_kwargs = {
        "backbone": backbone,
        "action_token_ids": vocab,
        "adapter_hidden": config.policy.adapter_hidden,
        "value_hidden": config.policy.value_hidden,
    }
    common = {
        "learning_rate": rl.learning_rate, "n_steps": rl.n_steps, "gamma": rl.gamma,
        "gae_lambda": rl.gae_lambda,
        "ent_coef": rl.ent_coef, "vf_coef": rl.vf_coef, "max_grad_norm": rl.max_grad_norm,
        "policy_kwargs": policy_kwargs, "seed": config.seed, "tensorboard_log": str(run_dir), "verbose": 0,
    }  # fmt: skip
    if rl.algo == "ppo":
        return PPO(
            TokenPolicy,
            env,
            batch_size=rl.batch_size,
            n_epochs=rl.n_epochs,
            clip_range=rl.clip_range,
            **common,
        )
    return A2C(TokenPolicy, env, **common)


class _Tracker:
    """Evaluates on dev at fixed intervals, keeps the best prompt, logs metrics and shows progress."""

    def __init__(self, config, scorer, dev_examples, env, model, run_dir: Path, task: Task, progress: bool):
        self.config, self.scorer, self.dev = config, scorer, dev_examples
        self.dev_labels = np.array([ex.label for ex in dev_examples])
        self.env, self.model, self.run_dir, self.task = env, model, run_dir, task
        self.vocab = env.template.action_token_ids
        self.best: Candidate | None = None
        self.last_eval_step = -1
        self.recent: dict[tuple[int, ...], float] = {}  # training prompts since the last eval -> best reward
        self.rewards: list[float] = []
        self.accuracies: list[float] = []
        self.started = time.perf_counter()
        self.metrics_file = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.bar = tqdm(total=config.total_timesteps, desc="training", unit="step", disable=not progress)

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        tracker = self

        class _Callback(BaseCallback):
            def _on_step(self) -> bool:
                tracker.on_step(self.locals.get("dones"), self.model.num_timesteps)
                return True

        return _Callback()

    def on_step(self, dones, step: int) -> None:
        self.bar.update(step - self.bar.n)
        if dones is not None and np.all(dones):
            batch = self.env.last_batch
            for ids, reward in zip(batch["prompt_ids"], batch["rewards"], strict=True):
                self.recent[ids] = max(reward, self.recent.get(ids, -np.inf))
            self.rewards.append(float(np.mean(batch["rewards"])))
            self.accuracies.append(float(np.mean(batch["accuracy"])))
        if self.last_eval_step < 0 or step - self.last_eval_step >= self.config.eval_every:
            self.evaluate(step)

    def greedy_prompt(self) -> tuple[int, ...]:
        from rlprompt.envs.prompt_env import PAD

        obs = np.full((1, self.config.env.prompt_length), PAD, dtype=np.int64)
        for t in range(obs.shape[1]):
            action, _ = self.model.predict(obs, deterministic=True)
            obs[0, t] = self.vocab[int(action[0])]
        return tuple(int(t) for t in obs[0])

    def evaluate(self, step: int) -> None:
        from rlprompt.envs.prompt_env import batch_accuracy, gap_reward

        self.last_eval_step = step
        greedy = self.greedy_prompt()
        elite = sorted(self.recent, key=self.recent.get, reverse=True)[: self.config.candidates_per_eval]
        prompts = list(dict.fromkeys([greedy, *elite]))
        self.recent.clear()
        logprobs = self.scorer.score(prompts, self.dev)
        accuracy = batch_accuracy(logprobs, self.dev_labels)
        reward = gap_reward(
            logprobs, self.dev_labels, self.config.env.correct_scale, self.config.env.wrong_scale
        )
        lm = self.scorer.lm
        found = [
            Candidate(p, lm.decode(list(p)), float(a), float(r), step)
            for p, a, r in zip(prompts, accuracy, reward, strict=True)
        ]
        improved = False
        for cand in found:
            if self.best is None or cand.key > self.best.key:
                self.best, improved = cand, True
        if improved:  # export at once: an interrupted run keeps its best prompt
            save_prompt(
                self.exported(self.best, {"dev_accuracy": self.best.dev_accuracy}),
                self.run_dir / "prompt.json",
            )
        record = {
            "step": step,
            "seconds": round(time.perf_counter() - self.started, 1),
            "train_reward": self.rewards[-1] if self.rewards else None,
            "train_batch_accuracy": self.accuracies[-1] if self.accuracies else None,
            "greedy_prompt": found[0].text,
            "greedy_dev_accuracy": found[0].dev_accuracy,
            "best_dev_accuracy": self.best.dev_accuracy,
            "best_prompt": self.best.text,
            "reward_queries": int(self.scorer.stats.pairs_scored),
        }
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        logger = self.model.logger
        for key in ("train_reward", "train_batch_accuracy", "greedy_dev_accuracy", "best_dev_accuracy"):
            if record[key] is not None:
                logger.record(f"rlprompt/{key}", record[key])
        logger.dump(step)
        self.bar.set_postfix_str(
            f"reward {record['train_reward'] or 0:.1f} "
            f"best dev {self.best.dev_accuracy:.3f} {self.best.text!r}"
        )

    def exported(self, best: Candidate, metrics: dict) -> LearnedPrompt:
        cfg = self.config
        return LearnedPrompt(
            text=best.text, token_ids=list(best.ids), model=self.scorer.lm.name,
            model_kind=self.scorer.lm.kind,
            template=self.scorer.template.text, verbalizers=list(self.task.verbalizers),
            class_names=list(self.task.class_names), task=self.task.name, data_seed=cfg.task.seed,
            task_source=cfg.task.name,
            method=cfg.method, seed=cfg.seed, metrics=metrics, library_version=__version__,
        )  # fmt: skip

    def close(self) -> None:
        self.bar.close()
        self.metrics_file.close()


if __name__ == "__main__":
    run_cli(main)
