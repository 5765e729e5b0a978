"""The discrete prompt method: a token policy trained by RL (PPO, A2C or SQL) in a ``PromptVecEnv``.

What the prompt is for lives in an objective: :class:`ClassificationObjective` (label scores through the
Scorer) or :class:`rlprompt.style.StyleObjective` (rewrites for style transfer). It builds the env, scores
candidates on dev, and evaluates the chosen prompt on test; the policy, the tracker, the checkpoints and
the export are shared.

Every ``total_timesteps / evaluations`` env steps the greedy prompt and the best training prompts since the
last evaluation are scored on dev, and the best so far is kept (and exported at once, so an interrupted run
still leaves a valid ``prompt.json``). The run directory gets ``metrics.jsonl``, TensorBoard events,
``prompt.json``, the trained policy (``policy.zip``: trainable weights and the backbone's name) and
``summary.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlprompt.calibration import calibrate, log_prior, reference_method, scorer_prior, task_calibration
from rlprompt.checkpoint import check_finite, non_finite, parameters_sum, restore_rng, save_checkpoint
from rlprompt.errors import RLPromptError
from rlprompt.evaluate import evaluate_prompts, make_scorer, prompt_budget
from rlprompt.export import LearnedPrompt, save_prompt
from rlprompt.methods.base import EvalLog, MethodContext, MethodResult, TestResult, path_bytes
from rlprompt.models import LanguageModel, load_model
from rlprompt.version import __version__
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


def run(ctx: MethodContext) -> MethodResult:
    """Train the prompt policy; evaluate the best dev prompt (and the manual prompt) on test."""
    from rlprompt.style import StyleTask

    config, task, lm, run_dir = ctx.config, ctx.task, ctx.lm, ctx.run_dir
    manual = ctx.manual_prompt
    backbone = config.policy.backbone or default_backbone(config.model)
    policy_lm = load_model(backbone, config.device, config.dtype)
    # The policy writes tokens of its own vocabulary; the task LM gets them as they are when the two share
    # a tokenizer, else as the decoded text (ClassificationObjective.task_prompt).
    vocab = action_vocabulary(policy_lm, config.vocab.kind, config.vocab.size, config.vocab.tokens)
    if isinstance(task, StyleTask):
        _check_same_tokenizer(lm, policy_lm)
        objective = _style_objective(ctx)
    else:
        # Sentences get all the room but what the longest prompt scored here (learned or manual) needs; a
        # prompt re-tokenized by another tokenizer may take a few times its length.
        longest = config.env.prompt_length * (1 if same_tokenizer(lm, policy_lm) else TRANSLATION_ROOM)
        budget = max(longest, prompt_budget(lm, [manual]))
        scorer = make_scorer(lm, task, config.task.template, prompt_budget=budget)
        objective = ClassificationObjective(scorer, task, config, policy_lm)

    env = objective.make_env(config, ctx.seed, vocab)
    model = _make_algorithm(config, ctx.seed, env, vocab, backbone, run_dir)
    tracker = _Tracker(ctx, objective, env, model)
    done_steps = tracker.resume(ctx.resume) if ctx.resume else 0
    interrupted = False
    try:
        try:
            model.learn(
                total_timesteps=config.total_timesteps - done_steps, callback=tracker.callback(),
                reset_num_timesteps=not done_steps,
            )  # fmt: skip
            # A stop request during the last rollout still lets training finish.
            interrupted = ctx.stop.requested and model.num_timesteps < config.total_timesteps
        except KeyboardInterrupt:
            interrupted = True
        except ValueError as err:  # torch's distributions refuse NaN logits: say so in the user's terms
            if "invalid values" not in str(err):
                raise
            raise non_finite("the policy's action scores", model.num_timesteps, run_dir,
                             tracker.last_checkpoint, "Lower rl.learning_rate.") from None  # fmt: skip
        if interrupted:
            step = tracker.last_checkpoint
            print(f"\nstopped at step {step}: evaluating the best prompt so far", flush=True)
        if not interrupted and tracker.last_eval_step != model.num_timesteps:
            tracker.evaluate(model.num_timesteps)
        if not interrupted and config.rl.polish_rounds and tracker.best is not None:
            polished = polish_prompt(
                model, objective.train_reward, tracker.best.ids, vocab, config.rl.polish_rounds,
                config.rl.polish_top_k,
            )  # fmt: skip
            tracker.evaluate(model.num_timesteps, extra=polished, label="polish")
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted while polishing: evaluating the best prompt so far", flush=True)
    finally:
        tracker.close()
    train_seconds = tracker.log.elapsed
    # Only the trainable adapter, value head and logit gain (with their optimizer state) are saved; the
    # backbone is recorded by name in the policy's constructor arguments.
    model.save(run_dir / "policy.zip")

    best = tracker.best
    if best is None:
        print(f"stopped before the first evaluation, so there is no prompt to export yet; "
              f"continue with  python -m rlprompt.train --resume {run_dir}", flush=True)  # fmt: skip
        raise KeyboardInterrupt
    lm_tokens = int(objective.stats.tokens_processed)  # training and dev; test scoring comes next
    reward_queries = int(objective.stats.pairs_scored)
    test = objective.test(ctx, best, manual)
    metrics = {
        f"dev_{objective.metric}": best.dev_accuracy,
        **test.metrics,
        "found_at_step": best.step,
        "steps": int(model.num_timesteps),
        "train_seconds": round(train_seconds, 1),
        "reward_queries": reward_queries,
    }
    save_prompt(tracker.exported(best, metrics), run_dir / "prompt.json")
    summary = (
        f"run: {run_dir}\n"
        f"prompt: {best.text!r}  (token ids {list(best.ids)})\n"
        f"{test.summary}\n"
        f"{model.num_timesteps} steps in {train_seconds:.0f} s, {reward_queries} reward queries"
        + (" (interrupted)" if interrupted else "")
    )
    (run_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    trainable = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    return MethodResult(
        method="rl", seed=ctx.seed, model=lm.name, task=task.name, dev_accuracy=best.dev_accuracy,
        test_accuracy=test.score, test_macro_f1=test.secondary, steps=int(model.num_timesteps),
        train_seconds=round(train_seconds, 1), lm_tokens=lm_tokens, trainable_params=int(trainable),
        artifact="prompt.json", artifact_bytes=path_bytes(run_dir / "prompt.json"), learned=best.text,
        interpretable=True, transferable=True, curve=tracker.log.curve, interrupted=interrupted,
        metric=objective.metric, calibration=config.calibration,
        test_accuracy_raw=test.metrics.get("test_accuracy_raw"),
        test_accuracy_calibrated=test.metrics.get("test_accuracy_calibrated"),
        calibrated_with=test.metrics.get("calibrated_with"), reward_queries=reward_queries,
    )  # fmt: skip


class ClassificationObjective:
    """Classification through the Scorer: the gap reward in training, dev accuracy (the gap reward breaks
    ties) for choosing the prompt, and test accuracy of the best prompt and of the manual one."""

    metric = "accuracy"

    def __init__(self, scorer, task, config, policy_lm: LanguageModel | None = None):
        self.scorer, self.task, self.config = scorer, task, config
        self.policy_lm = policy_lm or scorer.lm
        self.shared_tokenizer = same_tokenizer(scorer.lm, self.policy_lm)
        self.train, self.dev_examples = task.examples("train"), task.examples("dev")
        self.dev_labels = np.array([ex.label for ex in self.dev_examples])
        self.calibration = task_calibration(config.calibration, task)

    def task_prompt(self, policy_ids) -> tuple[int, ...] | str:
        """What the task LM is given for a prompt the policy wrote: its ids when the two share a tokenizer,
        else its text (re-tokenized by the task LM's tokenizer, or sent as text to a server)."""
        if self.shared_tokenizer:
            return tuple(policy_ids)
        return self.policy_lm.decode(list(policy_ids)).strip()

    def task_prompts(self, prompts) -> list:
        return [self.task_prompt(p) for p in prompts]

    def task_token_ids(self, policy_ids) -> list[int]:
        """The task LM's token ids of a policy prompt (what its scores are cached under)."""
        return list(self.scorer.prompt_ids(self.task_prompt(policy_ids)))

    def reward_prior(self):
        """How the training reward removes each prompt's label prior (None: raw scores). Batch calibration
        takes it from the reward batch's own inputs, whose scores are at hand; the others from their
        reference inputs."""
        if not self.calibration.active:
            return None
        if self.calibration.method == "batch":
            return lambda prompts, logprobs: log_prior(logprobs)
        return lambda prompts, logprobs: scorer_prior(self.scorer, prompts, self.calibration)

    def train_reward(self, prompts) -> np.ndarray:
        """The gap reward of ``prompts`` on every training example, calibrated as in training."""
        from rlprompt.envs.prompt_env import gap_reward

        prompts = self.task_prompts(prompts)
        logprobs = self.scorer.score(prompts, self.train)
        prior = self.reward_prior()
        if prior is not None:
            logprobs = calibrate(logprobs, prior(prompts, logprobs))
        labels = np.array([ex.label for ex in self.train])
        return gap_reward(logprobs, labels, self.config.env.correct_scale, self.config.env.wrong_scale)

    @property
    def lm(self):
        return self.scorer.lm

    @property
    def stats(self):
        return self.scorer.stats

    def cached_scores(self):
        return self.scorer.cached_scores()

    def load_cached_scores(self, state) -> None:
        self.scorer.load_cached_scores(state)

    def elite_scores(self, batch: dict) -> np.ndarray:
        """What ranks a batch's prompts as dev candidates: the gap reward (comparable across batches)."""
        return batch["rewards"]

    def make_env(self, config, seed: int, vocab):
        from rlprompt.envs.prompt_env import PromptVecEnv

        env_cfg = config.env
        return PromptVecEnv(
            self.scorer, self.train, vocab, num_envs=env_cfg.num_envs, prompt_length=env_cfg.prompt_length,
            examples_per_reward=env_cfg.examples_per_reward, correct_scale=env_cfg.correct_scale,
            wrong_scale=env_cfg.wrong_scale, normalize=env_cfg.normalize, seed=seed,
            reward_prior=self.reward_prior(), to_task=None if self.shared_tokenizer else self.task_prompt,
            policy_lm=self.policy_lm,
        )  # fmt: skip

    def dev(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Dev accuracy and gap reward per prompt, calibrated with the prior from the unlabelled training
        and dev inputs when the run calibrates."""
        from rlprompt.envs.prompt_env import batch_accuracy, gap_reward

        prompts = self.task_prompts(prompts)
        logprobs = self.scorer.score(prompts, self.dev_examples)
        logprobs = calibrate(logprobs, scorer_prior(self.scorer, prompts, self.calibration))
        env = self.config.env
        return (batch_accuracy(logprobs, self.dev_labels),
                gap_reward(logprobs, self.dev_labels, env.correct_scale, env.wrong_scale))  # fmt: skip

    def export_fields(self) -> dict:
        return {"template": self.scorer.template.text, "verbalizers": list(self.task.verbalizers),
                "class_names": list(self.task.class_names)}  # fmt: skip

    def test(self, ctx: MethodContext, best: Candidate, manual: str) -> TestResult:
        """The chosen prompt, the manual prompt and the empty prompt on test, raw and calibrated (with the
        run's calibration, or batch calibration when the run uses none); the headline follows the run."""
        examples = self.task.examples("test")
        reference = task_calibration(reference_method(self.config.calibration), self.task)
        learned, manual_result, empty_result = evaluate_prompts(
            ctx.test_scorer, examples, [self.task_prompt(best.ids), manual, ""], ctx.progress, reference
        )
        headline = learned.metrics if self.calibration.active else learned.raw
        metrics = {
            "test_accuracy": headline.accuracy, "test_macro_f1": headline.macro_f1,
            "test_accuracy_raw": learned.raw.accuracy, "test_accuracy_calibrated": learned.metrics.accuracy,
            "calibrated_with": reference.method, "manual_prompt": manual,
            "manual_test_accuracy": manual_result.raw.accuracy,
            "manual_test_accuracy_calibrated": manual_result.metrics.accuracy,
            "empty_test_accuracy": empty_result.raw.accuracy,
            "empty_test_accuracy_calibrated": empty_result.metrics.accuracy,
        }  # fmt: skip
        scored = "calibrated" if self.calibration.active else "raw"
        summary = "\n".join([
            f"dev accuracy {best.dev_accuracy:.3f} ({scored})   "
            f"test accuracy {headline.accuracy:.3f} ({scored})",
            f"test accuracy, raw -> {reference.method}-calibrated:",
            f"  learned prompt   {learned.raw.accuracy:.3f} -> {learned.metrics.accuracy:.3f}",
            f"  manual {manual!r:<9} {manual_result.raw.accuracy:.3f} -> "
            f"{manual_result.metrics.accuracy:.3f}",
            f"  empty prompt     {empty_result.raw.accuracy:.3f} -> {empty_result.metrics.accuracy:.3f}",
        ])  # fmt: skip
        return TestResult(headline.accuracy, headline.macro_f1, metrics, summary)


def _style_objective(ctx: MethodContext):
    from rlprompt.style import StyleObjective

    style = ctx.config.style
    return StyleObjective(
        ctx.lm, ctx.task, samples=style.samples, eval_samples=style.eval_samples, top_k=style.top_k,
        max_new_tokens=style.max_new_tokens, seed=ctx.seed, test_inputs=style.test_inputs,
    )  # fmt: skip


def greedy_prompt(model, vocab, length: int) -> tuple[int, ...]:
    """The prompt a trained algorithm writes when it always takes its most likely token."""
    from rlprompt.envs.prompt_env import PAD

    obs = np.full((1, length), PAD, dtype=np.int64)
    for t in range(length):
        action, _ = model.predict(obs, deterministic=True)
        obs[0, t] = vocab[int(action[0])]
    return tuple(int(t) for t in obs[0])


def polish_prompt(
    model, rewards, start: tuple[int, ...], vocab: np.ndarray, rounds: int, top_k: int
) -> list[tuple[int, ...]]:
    """Policy-guided coordinate ascent on the training reward, after RL has converged.

    PPO settles on one prompt after a few thousand steps (within-batch normalisation leaves no signal once
    every environment writes the same prompt). From the best prompt, each position in turn is replaced by
    the policy's ``top_k`` tokens for it (given the prompt before it), all scored in one Scorer call on the
    training examples (``rewards(prompts)``: the objective's training reward); the best change is kept
    when it raises the reward. Returns the prompts accepted along the way (the caller picks among them on
    dev, like any other candidate)."""
    import torch

    from rlprompt.envs.prompt_env import PAD

    current = tuple(start)
    best_reward = float(rewards([current])[0])
    accepted = []
    length = len(current)
    for _ in range(rounds):
        improved = False
        for pos in range(length):
            obs = np.full((1, length), PAD, dtype=np.int64)
            obs[0, :pos] = current[:pos]
            obs_t, _ = model.policy.obs_to_tensor(obs)
            with torch.no_grad():
                logits = model.policy.get_distribution(obs_t).distribution.logits[0]
            top = torch.topk(logits, min(top_k, logits.shape[-1])).indices.cpu().numpy()
            options = [current[:pos] + (int(vocab[a]),) + current[pos + 1 :] for a in top]
            options = [o for o in dict.fromkeys(options) if o != current]
            if not options:
                continue
            scores = rewards(options)
            i = int(np.argmax(scores))
            if scores[i] > best_reward:
                current, best_reward, improved = options[i], float(scores[i]), True
                accepted.append(current)
        if not improved:
            break
    return accepted


DEFAULT_BACKBONE = "smollm2-135m"  # the policy's backbone when the task LM runs elsewhere (a server)


def default_backbone(model: str) -> str:
    """The task LM itself when it runs in this process, else the default local backbone."""
    from rlprompt.backends import backend_of

    return model if backend_of(model).name == "hf" else DEFAULT_BACKBONE


TRANSLATION_ROOM = 4  # task-LM tokens reserved per policy token when the two tokenizers differ


def same_tokenizer(a: LanguageModel, b: LanguageModel) -> bool:
    return a is b or a.tokenizer is b.tokenizer or a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def _check_same_tokenizer(task_lm: LanguageModel, backbone: LanguageModel) -> None:
    """Style transfer still needs one tokenizer: its rewriter takes the policy's ids."""
    if not same_tokenizer(task_lm, backbone):
        raise RLPromptError(
            f"policy.backbone {backbone.name!r} has a different tokenizer from the task model "
            f"{task_lm.name!r}; style transfer hands the policy's token ids to the rewriter, so they must "
            "share one"
        )


def _make_algorithm(config, seed: int, env, vocab, backbone: str, run_dir: Path):
    from stable_baselines3 import A2C, PPO

    from rlprompt.policies.token_policy import TokenPolicy
    from rlprompt.sql import SQL

    rl = config.rl
    policy_kwargs = {
        "backbone": backbone,
        "action_token_ids": vocab,
        "adapter_hidden": config.policy.adapter_hidden,
        "value_hidden": config.policy.value_hidden,
        "backbone_dtype": config.dtype,
        "backbone_device": config.device,
    }
    common = {
        "learning_rate": rl.learning_rate, "n_steps": rl.n_steps, "gamma": rl.gamma,
        "gae_lambda": rl.gae_lambda,
        "ent_coef": rl.ent_coef, "vf_coef": rl.vf_coef, "max_grad_norm": rl.max_grad_norm,
        "policy_kwargs": policy_kwargs, "seed": seed, "tensorboard_log": str(run_dir), "verbose": 0,
        "device": config.device,
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
    if rl.algo == "sql":
        return SQL(
            TokenPolicy, env, learning_rate=rl.learning_rate, polyak=rl.polyak, top_k=rl.top_k,
            gradient_steps=rl.n_epochs, replay_size=rl.replay_size, replay_batches=rl.replay_batches,
            max_grad_norm=rl.max_grad_norm, reward_scale=rl.reward_scale, policy_kwargs=policy_kwargs,
            seed=seed, tensorboard_log=str(run_dir), verbose=0, device=config.device,
        )  # fmt: skip
    return A2C(TokenPolicy, env, **common)


class _Tracker:
    """Evaluates on dev at fixed intervals, keeps the best prompt, logs metrics and shows progress."""

    def __init__(self, ctx: MethodContext, objective, env, model):
        config = ctx.config
        self.config, self.seed, self.objective = config, ctx.seed, objective
        self.env, self.model, self.run_dir, self.task = env, model, ctx.run_dir, ctx.task
        self.eval_every = max(1, config.total_timesteps // config.evaluations)
        self.vocab = env.template.action_token_ids
        self.best: Candidate | None = None
        self.last_eval_step = -1
        self.recent: dict[tuple[int, ...], float] = {}  # training prompts since the last eval -> best reward
        self.rewards: list[float] = []
        self.accuracies: list[float] = []
        self.ctx = ctx
        self.last_checkpoint = 0
        self.stopping = False
        self._rng_to_restore: dict | None = None
        log_state = ctx.resume["log"] if ctx.resume else None
        self.log = EvalLog(ctx.run_dir, config.total_timesteps, f"rl s{ctx.seed}", ctx.progress, log_state)

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        tracker = self

        class _Callback(BaseCallback):
            def _on_training_start(self) -> None:
                tracker.on_training_start()

            def _on_rollout_start(self) -> None:
                tracker.on_rollout_start(self.model.num_timesteps)

            def _on_step(self) -> bool:
                return tracker.on_step(self.locals.get("dones"), self.model.num_timesteps)

        return _Callback()

    # -- checkpoints: at rollout starts, where no episode is half-written and no update is pending ------

    def on_rollout_start(self, step: int) -> None:
        # After an update: a policy with NaN weights must neither be saved nor sample the next prompts.
        weights = parameters_sum(self.model.policy.parameters())
        check_finite(weights, "the policy's weights", step, self.run_dir, self.last_checkpoint,
                     "Lower rl.learning_rate.")  # fmt: skip
        if self.env._length:  # mid-prompt (rl.n_steps is not a multiple of the prompt length): not here
            return
        if self.ctx.checkpoint_due(step, self.last_checkpoint, self.last_eval_step > self.last_checkpoint):
            self.save_checkpoint(step)
            self.stopping = self.ctx.stop.requested

    def save_checkpoint(self, step: int) -> None:
        from dataclasses import asdict

        model, stats = self.model, self.objective.stats
        state = {
            "method": "rl", "step": step, "n_updates": getattr(model, "_n_updates", 0),
            "policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict(),
            "env_rng": self.env.rng.bit_generator.state,
            "best": asdict(self.best) if self.best else None, "last_eval_step": self.last_eval_step,
            "recent": dict(self.recent), "rewards": list(self.rewards), "accuracies": list(self.accuracies),
            "scorer_stats": (stats.pairs_scored, stats.tokens_processed), "log": self.log.state(step),
            "scores": self.objective.cached_scores(),
        }  # fmt: skip
        if hasattr(model, "target_head"):  # SQL's target network and sampler
            state["target"] = (model.target_extractor.state_dict(), model.target_head.state_dict())
            state["sql_rng"] = model._rng.bit_generator.state
            state["replay"] = list(model.replay) if model.replay_size else []
        save_checkpoint(self.run_dir, state)
        self.last_checkpoint = step

    def resume(self, state: dict) -> int:
        """Load a checkpoint into the model and the tracker; returns its step. The random states are
        restored when training starts (SB3 reseeds and resets the env while setting up ``learn``)."""
        model = self.model
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
        model.num_timesteps, model._n_updates = state["step"], state["n_updates"]
        if "target" in state:
            model.target_extractor.load_state_dict(state["target"][0])
            model.target_head.load_state_dict(state["target"][1])
            model._rng.bit_generator.state = state["sql_rng"]
            model.replay.extend(state.get("replay", []))
        best = state["best"]
        self.best = Candidate(**{**best, "ids": tuple(best["ids"])}) if best else None
        self.last_eval_step = state["last_eval_step"]
        self.recent, self.rewards, self.accuracies = state["recent"], state["rewards"], state["accuracies"]
        self.objective.stats.pairs_scored, self.objective.stats.tokens_processed = state["scorer_stats"]
        self.objective.load_cached_scores(state["scores"])
        self.last_checkpoint = state["step"]
        self._rng_to_restore = state
        return state["step"]

    def on_training_start(self) -> None:
        if self._rng_to_restore is not None:
            restore_rng(self._rng_to_restore["rng"])
            self.env.rng.bit_generator.state = self._rng_to_restore["env_rng"]
            self._rng_to_restore = None

    def on_step(self, dones, step: int) -> bool:
        """Track one env step; False (stop training) on a stop request, or once the reward-query budget
        (``max_reward_queries``) is spent."""
        if self.stopping:
            return False
        self.log.bar.update(step - self.log.bar.n)
        episode_end = dones is not None and np.all(dones)
        if episode_end:
            batch = self.env.last_batch
            check_finite(batch["rewards"], "the reward", step, self.run_dir, self.last_checkpoint,
                         "The task model's scores overflowed; check the model and its dtype.")  # fmt: skip
            for ids, reward in zip(batch["prompt_ids"], self.objective.elite_scores(batch), strict=True):
                self.recent[ids] = max(reward, self.recent.get(ids, -np.inf))
            self.rewards.append(float(np.mean(batch["rewards"])))
            self.accuracies.append(float(np.mean(batch["accuracy"])))
        if self.last_eval_step < 0 or step - self.last_eval_step >= self.eval_every:
            self.evaluate(step)
        budget = self.config.reward_query_budget("rl")
        return not (budget and episode_end and self.objective.stats.pairs_scored >= budget)

    def evaluate(self, step: int, extra: list[tuple[int, ...]] = (), label: str = "rl") -> None:
        """Score the greedy prompt, the best training prompts since the last evaluation and ``extra``
        prompts (the polished ones) on dev; keep the best."""
        self.last_eval_step = step
        greedy = greedy_prompt(self.model, self.vocab, self.config.env.prompt_length)
        elite = sorted(self.recent, key=self.recent.get, reverse=True)[: self.config.candidates_per_eval]
        prompts = list(dict.fromkeys([greedy, *elite, *extra]))
        self.recent.clear()
        accuracy, reward = self.objective.dev(prompts)
        lm = self.objective.policy_lm
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
                self.exported(self.best, {f"dev_{self.objective.metric}": self.best.dev_accuracy}),
                self.run_dir / "prompt.json",
            )
        self.log.record(
            step, max(c.dev_accuracy for c in found), self.objective.stats.tokens_processed,
            train_reward=self.rewards[-1] if self.rewards else None,
            train_batch_accuracy=self.accuracies[-1] if self.accuracies else None,
            greedy_prompt=found[0].text, greedy_dev_accuracy=found[0].dev_accuracy,
            best_prompt=self.best.text, best_dev_reward=self.best.dev_reward, phase=label,
            reward_queries=int(self.objective.stats.pairs_scored),
        )  # fmt: skip
        logger = self.model.logger
        logger.record("rlprompt/greedy_dev_accuracy", found[0].dev_accuracy)
        logger.record("rlprompt/best_dev_accuracy", self.best.dev_accuracy)
        if self.rewards:
            logger.record("rlprompt/train_reward", self.rewards[-1])
            logger.record("rlprompt/train_batch_accuracy", self.accuracies[-1])
        logger.dump(step)
        self.log.bar.set_postfix_str(
            f"train {self.objective.metric} {self.accuracies[-1] if self.accuracies else 0:.3f} "
            f"best dev {self.best.dev_accuracy:.3f} {self.best.text!r}"
        )

    def exported(self, best: Candidate, metrics: dict) -> LearnedPrompt:
        cfg, lm, objective = self.config, self.objective.lm, self.objective
        task_ids = objective.task_token_ids(best.ids)
        return LearnedPrompt(
            text=best.text, token_ids=task_ids, model=lm.name, model_kind=lm.kind, task=self.task.name,
            policy_model=objective.policy_lm.name, policy_token_ids=list(best.ids),
            data_seed=self.task.data_seed if hasattr(self.task, "data_seed") else cfg.task.seed,
            task_source=cfg.task.name,
            method="rl", seed=self.seed, metrics=metrics, library_version=__version__,
            calibration=cfg.calibration, **self.objective.export_fields(),
        )  # fmt: skip

    def close(self) -> None:
        self.log.close()
