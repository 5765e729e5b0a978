"""The discrete prompt method: a token policy trained by RL (PPO, A2C or SQL) in a ``PromptVecEnv``.

What the prompt is for lives in the task kind's objective (:mod:`rlprompt.kinds`): label scores through the
Scorer for classification, rewrites for style transfer. It builds the env, scores
candidates on dev, and evaluates the chosen prompt on test; the policy, the tracker, the checkpoints and
the export are shared.

Every ``total_timesteps / evaluations`` env steps the greedy prompt and the best training prompts since the
last evaluation are scored on dev, and the run's chosen prompt so far (``rl.prompt_rule``: of the 3 best by
dev accuracy, the one with the highest dev reward) is exported at once, so an interrupted run still leaves
a valid ``prompt.json``. The run directory gets
``metrics.jsonl``, TensorBoard events, ``prompt.json``, the trained policy (``policy.zip``: trainable
weights and the backbone's name) and ``summary.txt``.
"""

from __future__ import annotations

import io
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlprompt.checkpoint import (
    CHECKPOINT,
    StopAtOnce,
    check_finite,
    non_finite,
    overflowed,
    parameters_sum,
    restore_rng,
    save_checkpoint,
)
from rlprompt.files import atomic_write_bytes
from rlprompt.kinds import kind_module
from rlprompt.methods.base import (
    Candidate,
    DevChoice,
    Estimate,
    EvalLog,
    MethodContext,
    MethodResult,
    PromptRule,
    tested_prompts,
)
from rlprompt.methods.search import uniform_crossover
from rlprompt.settings import at_least_one, positive, within
from rlprompt.vocab import action_vocabulary, policy_backbone, policy_model


@dataclass
class RLConfig:
    """Stable-Baselines3 hyperparameters, under SB3's own names."""

    algo: typing.Literal["ppo", "a2c", "sql"] = "ppo"  # sql: soft Q-learning (rlprompt/sql.py)
    learning_rate: float = 3e-4
    n_steps: int = 5  # env steps per rollout and env: one prompt each
    batch_size: int = 80  # PPO only
    n_epochs: int = 4  # PPO only
    clip_range: float = 0.2  # PPO only
    gamma: float = 1.0  # one reward at the end of a short episode: no discount
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    # After RL: policy-guided coordinate ascent on the training reward (see methods/rl.py polish_prompt),
    # from the prompt rl.prompt_rule chooses; the prompts it accepts are candidates on dev like any other.
    # 0 turns it off.
    polish_rounds: int = 0
    polish_top_k: int = 50
    # SQL only (RLPrompt's values in brackets; learning_rate above: RLPrompt 5e-5): target-network Polyak
    # rate (1e-3), sampling among the top-k Q-values (256; 0: all), replay of past prompt batches (off).
    polyak: float = 1e-3
    top_k: int = 256
    replay_size: int = 0
    replay_batches: int = 0
    # SQL: rewards × this in the losses (the inverse soft-Q temperature). Measured on the quickstart (seed 0,
    # 4,000 steps): 10 gave best dev 0.72 (test 0.79), 30 gave 0.69; with 1, training-batch accuracy stayed
    # near 0.55 for 5,000 steps (z-scored rewards of about ±1 barely tilt a softmax over 1,000 tokens).
    reward_scale: float = 10.0
    # RL only: stop early once this many (prompt, example) pairs were scored (training and dev); overrides
    # the top-level max_reward_queries, which applies to every method that queries a reward.
    max_reward_queries: int | None = None
    # Warm start: before RL, the policy is trained by behaviour cloning (cross-entropy on this prompt's
    # tokens, teacher-forced) until its greedy prompt is this one and each of its tokens has at least
    # init_confidence probability, and no further (see warm_start). Tokens not in the action vocabulary
    # join it; a prompt shorter than env.prompt_length adds a blank action (writes nothing), so prompts
    # have up to env.prompt_length tokens.
    init_prompt: str | None = None
    init_confidence: float = 0.5
    # Restarts (PPO and A2C): PPO settles on one prompt and then mostly writes it again, which costs nothing
    # and teaches nothing (z-scored rewards of equal prompts are all 0). When fewer than restart_new_fraction
    # of the prompts written over the last restart_window prompt batches were new (never scored before), the
    # policy goes back to its initial weights, its optimizer state is cleared, and it is moved by behaviour
    # cloning (as the warm start, to restart_confidence) to the best training prompt so far: it then samples
    # variations of that prompt, and PPO climbs from there. 0 turns restarts off.
    restart_window: int = 0
    restart_new_fraction: float = 0.1
    restart_confidence: float = 0.5
    # Self-imitation (PPO and A2C): after each update, imitate_steps Adam steps (the policy's optimizer) on
    # the mean negative log-likelihood of the imitate_top best training prompts so far (by training
    # reward), so the policy keeps sampling around and between them, as a genetic search keeps its elite.
    # 0 turns it off.
    imitate_top: int = 0
    imitate_steps: int = 1
    # Crossover in self-imitation: this many children of two elite prompts (each position's token from
    # either parent, as the search baseline's uniform crossover) join each imitation batch, unscored, so
    # the policy also samples mixtures of its best prompts, where a genetic search finds better ones.
    imitate_crossover: int = 0
    # How a prompt written on several training batches is ranked (the dev candidates, the self-imitation
    # elite, the restart prompt): max, by its best batch's reward; mean, by the mean over the distinct
    # batches it was scored on. They differ only where a batch is a sample of the training set
    # (env.examples_per_reward below its size); there max favours the prompts written most often, whose
    # best batch was the luckiest.
    elite_by: typing.Literal["max", "mean"] = "max"
    # Which prompt the run chooses (the artifact; an ensemble's first member): top_3_dev_reward, of the 3
    # best by dev accuracy the one with the highest dev reward (the gap reward on dev, less coarse than
    # accuracy on a few dozen examples), or dev_accuracy, the best by dev accuracy (the reward breaks
    # ties). Over 75 RL runs on development splits (SST-2, MR, CR, AG News) the dev reward's choice scored
    # 1.2 points more on test, ahead on 27 runs and behind on 7 (README "Would another rule choose better
    # than dev accuracy?"). top_k_report below 3 narrows the choice to that many.
    prompt_rule: PromptRule = "top_3_dev_reward"

    def __post_init__(self) -> None:
        at_least_one("rl", n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs,
                     max_reward_queries=self.max_reward_queries)  # fmt: skip
        positive("rl", learning_rate=self.learning_rate)
        within("rl", "init_confidence", self.init_confidence, 0.5, 0.99)  # >= 0.5: each token is the argmax
        within("rl", "restart_confidence", self.restart_confidence, 0.5, 0.99)
        within("rl", "restart_new_fraction", self.restart_new_fraction, 0, 1)
        if self.restart_window < 0:
            raise ValueError(
                f"'rl.restart_window' must be 0 (no restarts) or more, not {self.restart_window}"
            )
        ppo_only = {"restart_window": self.restart_window, "imitate_top": self.imitate_top}
        if self.algo == "sql" and any(ppo_only.values()):
            # Restarts: SQL's replay and target network would keep the settled prompt; self-imitation: SQL
            # has its own replay. Both named at once, so that one retry is enough.
            used = [key for key, value in ppo_only.items() if value]
            raise ValueError(
                " and ".join(f"'rl.{key}' ({ppo_only[key]})" for key in used)
                + f" {'apply' if len(used) > 1 else 'applies'} to ppo and a2c, not sql: add "
                + " ".join(f"--set rl.{key}=0" for key in used)
            )
        if self.imitate_top < 0 or self.imitate_steps < 1:
            raise ValueError(
                f"'rl.imitate_top' must be 0 (off) or more and 'rl.imitate_steps' at least 1, not "
                f"{self.imitate_top} and {self.imitate_steps}"
            )
        if self.imitate_crossover < 0 or (self.imitate_crossover and not self.imitate_top):
            raise ValueError(
                f"'rl.imitate_crossover' must be 0 (off), or more with 'rl.imitate_top' set, not "
                f"{self.imitate_crossover} with imitate_top {self.imitate_top}"
            )
        if self.elite_by not in ("max", "mean"):
            raise ValueError(f"'rl.elite_by' must be max or mean, not {self.elite_by!r}")
        if self.init_prompt is not None and not self.init_prompt.strip():
            raise ValueError(
                "'rl.init_prompt' is empty: give a prompt, or leave the key out for a cold start"
            )


def run(ctx: MethodContext) -> MethodResult:
    """Train the prompt policy; evaluate the chosen prompt (rl.prompt_rule; and the manual prompt) on test."""
    config, run_dir = ctx.config, ctx.run_dir
    policy_lm = policy_model(config)
    # The policy writes tokens of its own vocabulary; the task LM gets them as they are when the two share
    # a tokenizer, else as the decoded text (ClassificationObjective.task_prompt).
    vocab = action_vocabulary(policy_lm, config.vocab.kind, config.vocab.size, config.vocab.tokens)
    objective = kind_module(ctx.kind).objective(ctx, policy_lm)  # what the prompt is for
    start = None
    if config.rl.init_prompt:
        start = start_prompt_ids(objective, policy_lm, config.rl.init_prompt, config.env.prompt_length)
        vocab = with_start_prompt(vocab, start, config.env.prompt_length)

    env = objective.make_env(config, ctx.seed, vocab)
    model = _make_algorithm(config, ctx.seed, env, vocab, policy_backbone(config), run_dir)
    tracker = _Tracker(ctx, objective, env, model)
    done_steps = tracker.resume(ctx.resume) if ctx.resume else 0
    # A checkpoint written once training, its last evaluation and polishing were over: only the test
    # evaluation is left (a second signal or a kill stopped it).
    only_test = bool(ctx.resume and ctx.resume.get("finished"))
    if start is not None and not done_steps:  # (a resumed run has its warm-started policy back already)
        steps, probs = warm_start(model, start, vocab, config.env.prompt_length, config.rl.init_confidence)
        tracker.warm = {"prompt": config.rl.init_prompt, "steps": steps,
                        "probabilities": [round(p, 3) for p in probs]}  # fmt: skip
        if min(probs) < config.rl.init_confidence:
            reached = f"{min(probs):.2f}, not rl.init_confidence {config.rl.init_confidence}"
            print(
                f"warning: the warm start reached token probabilities {reached}, in {steps} steps", flush=True
            )
    interrupted = False
    try:
        try:
            if not only_test:
                log_name = type(model).__name__  # TensorBoard events in run_dir/PPO_1 (SB3 numbers the dirs)
                if not done_steps:  # a start from step 0 (a failed attempt before): its events are stale
                    for stale in run_dir.glob(f"{log_name}_*"):
                        shutil.rmtree(stale, ignore_errors=True)
                model.learn(
                    total_timesteps=config.total_timesteps - done_steps, callback=tracker.callback(),
                    reset_num_timesteps=not done_steps, tb_log_name=log_name,
                )  # fmt: skip
                # Stopped at a checkpoint on request. A request during the last rollout (or one the
                # reward-query budget ends) still lets training finish.
                interrupted = tracker.stopping
        except StopAtOnce:
            raise
        except KeyboardInterrupt:
            interrupted = True
        except ValueError as err:  # torch's distributions refuse NaN logits: say so in the user's terms
            if "invalid values" not in str(err):
                raise
            raise non_finite("the policy's action scores", model.num_timesteps, run_dir,
                             tracker.last_checkpoint, "Lower rl.learning_rate.") from None  # fmt: skip
        except RuntimeError as err:
            if not overflowed(err):
                raise
            raise non_finite("the policy's update", model.num_timesteps, run_dir,
                             tracker.last_checkpoint, "Lower rl.learning_rate.") from None  # fmt: skip
        if interrupted and tracker.dev.best is not None:  # (none yet: said below, with the --resume line)
            # A clean stop is at its checkpoint; an interrupt without our signal handler (a cancelled
            # worker) stops wherever it was, and a resume goes back to the last checkpoint.
            step, kept = tracker.trained_steps(interrupted), tracker.last_checkpoint
            if not (run_dir / CHECKPOINT).exists():
                resumes = " (no checkpoint was written yet: a resume starts again)"
            else:
                resumes = "" if step == kept else f" (a resume continues from the checkpoint at step {kept})"
            print(f"\nstopped at step {step}{resumes}: evaluating the chosen prompt so far", flush=True)
        if not interrupted and not only_test:
            if tracker.last_eval_step != model.num_timesteps:
                tracker.evaluate(model.num_timesteps)
            if config.rl.polish_rounds and tracker.dev.best is not None:
                start = tracker.dev.chosen()  # the exported one
                polished = polish_prompt(
                    model, objective.train_reward, start.ids, vocab, config.rl.polish_rounds,
                    config.rl.polish_top_k, config.env.prompt_length,
                )  # fmt: skip
                tracker.evaluate(model.num_timesteps, extra=polished, label="polish")
            # The test evaluation comes next (minutes on a large test set): a run stopped there resumes
            # from here instead of training again since its last checkpoint.
            tracker.save_checkpoint(model.num_timesteps, finished=True)
    except StopAtOnce:
        raise
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted while polishing: evaluating the chosen prompt so far", flush=True)
    finally:
        tracker.close()
    train_seconds = tracker.log.elapsed
    steps_trained = tracker.trained_steps(interrupted)
    # Only the trainable adapter, value head and logit gain (with their optimizer state) are saved; the
    # backbone is recorded by name in the policy's constructor arguments.
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write_bytes(run_dir / "policy.zip", buffer.getvalue())

    if tracker.dev.best is None:
        # (the command's last line gives the --resume that continues it: for a grid, the grid's directory)
        print("stopped before the first evaluation, so there is no prompt to export yet", flush=True)
        raise KeyboardInterrupt
    extra = {
        **({"warm_start": tracker.warm} if tracker.warm else {}),
        **({"restarts": tracker.restart.steps} if tracker.restart is not None else {}),
    }
    trainable = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    return tracker.dev.finish(steps_trained, "steps", train_seconds, interrupted, tracker.log.curve,
                              trainable, extra)  # fmt: skip


def greedy_prompt(model, vocab, length: int) -> tuple[int, ...]:
    """The prompt a trained algorithm writes when it always takes its most likely token."""
    from rlprompt.envs.prompt_env import PAD, written

    obs = np.full((1, length), PAD, dtype=np.int64)
    for t in range(length):
        action, _ = model.predict(obs, deterministic=True)
        obs[0, t] = vocab[int(action[0])]
    return written(obs[0])


def start_prompt_ids(objective, policy_lm, text: str, length: int) -> tuple[int, ...]:
    """``rl.init_prompt``'s tokens as the policy writes them (the objective encodes it as it reads a manual
    prompt); at most ``length`` (``env.prompt_length``)."""
    from rlprompt.errors import RLPromptError

    ids = tuple(objective.policy_prompt_ids(text))
    if not ids:
        raise RLPromptError(f"rl.init_prompt {text!r} has no tokens for {policy_lm.name}")
    if len(ids) > length:
        raise RLPromptError(
            f"rl.init_prompt {text!r} is {len(ids)} tokens for {policy_lm.name}, more than "
            f"env.prompt_length ({length}): shorten it or raise env.prompt_length"
        )
    return ids


def with_start_prompt(vocab: list[int], start: tuple[int, ...], length: int) -> list[int]:
    """The action vocabulary with the start prompt's missing tokens added, and a blank action (last) when
    the start prompt is shorter than ``length``."""
    from rlprompt.envs.prompt_env import BLANK

    vocab = list(vocab) + [t for t in dict.fromkeys(start) if t not in vocab]
    return vocab + [BLANK] if len(start) < length else vocab


def _teacher_forced(policy, prompts, vocab, length: int):
    """Observations and action indices for behaviour cloning on ``prompts``: each token given the prompt
    before it, blanks after a prompt shorter than ``length``."""
    import torch

    from rlprompt.envs.prompt_env import BLANK, PAD

    index = {int(t): i for i, t in enumerate(vocab)}
    rows, actions = [], []
    for prompt in prompts:
        # (the blank is looked up only when needed: a full-length prompt's vocabulary has none)
        acts = [index[t] for t in prompt] + [index[BLANK] for _ in range(length - len(prompt))]
        obs = np.full((length, length), PAD, dtype=np.int64)
        for t in range(1, length):
            obs[t, :t] = [vocab[a] for a in acts[:t]]
        rows.append(obs)
        actions.extend(acts)
    obs_t, _ = policy.obs_to_tensor(np.concatenate(rows))
    return obs_t, torch.as_tensor(actions)


def _action_logprobs(policy, obs_t, targets):
    import torch

    return policy.get_distribution(obs_t).distribution.logits[torch.arange(len(targets)), targets]


def warm_start(model, start: tuple[int, ...], vocab, length: int, confidence: float,
               max_steps: int = 1000, lr: float = 1e-3) -> tuple[int, list[float]]:  # fmt: skip
    """Move the policy to the prompt ``start`` by behaviour cloning: Adam on the mean negative
    log-probability of its tokens (then blanks up to ``length``), each given the prompt before it, until
    every one has probability at least ``confidence`` (so the greedy prompt is ``start``) or
    ``max_steps``. Stopping there keeps the rest of the distribution broad for exploration. Returns the
    steps taken and the tokens' final probabilities."""
    import torch

    policy = model.policy
    obs_t, targets = _teacher_forced(policy, [start], vocab, length)
    target = getattr(model, "target_head", None)  # SQL: its target network follows the policy from here
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    for step in range(max_steps + 1):
        logp = _action_logprobs(policy, obs_t, targets)
        if step == max_steps or bool((logp.exp() >= confidence).all()):
            break
        loss = -logp.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if target is not None:
        model.target_extractor.load_state_dict(policy.mlp_extractor.state_dict())
        target.load_state_dict(policy.action_net.state_dict())
    return step, [float(p) for p in logp.detach().exp()]


def imitate(model, prompts, vocab, length: int, steps: int) -> float:
    """Self-imitation: ``steps`` steps of the policy's own optimizer on the mean negative log-likelihood of
    ``prompts`` (teacher-forced, as the warm start), gradients clipped as PPO clips its own. Returns the
    last loss."""
    import torch

    policy = model.policy
    obs_t, targets = _teacher_forced(policy, prompts, vocab, length)
    params = [p for p in policy.parameters() if p.requires_grad]
    for _ in range(steps):
        loss = -_action_logprobs(policy, obs_t, targets).mean()
        policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, model.max_grad_norm)
        policy.optimizer.step()
    return float(loss.detach())


def crossover_children(parents, n: int, rng) -> list[tuple[int, ...]]:
    """``n`` children of two distinct ``parents`` each, by the search baseline's uniform crossover (fewer
    than two parents: none)."""
    parents = list(parents)
    if len(parents) < 2:
        return []
    children = []
    for _ in range(n):
        a, b = (parents[i] for i in rng.choice(len(parents), size=2, replace=False))
        children.append(uniform_crossover(a, b, rng))
    return children


def mean_batch_rewards(store: dict, prompts, rewards, examples: bytes) -> np.ndarray:
    """rl.elite_by mean: record one batch's rewards in ``store`` (prompt -> {batch: reward}; ``examples``
    names the training inputs the batch read) and return each prompt's mean over the distinct batches it
    has been scored on. On a batch seen before a prompt keeps its best reward there (the same inputs in
    another order differ only by float rounding), so where every batch is the whole training set the
    mean is the max, exactly."""
    means = []
    for ids, reward in zip(prompts, rewards, strict=True):
        seen = store.setdefault(ids, {})
        seen[examples] = max(float(reward), seen.get(examples, -np.inf))
        means.append(sum(seen.values()) / len(seen))
    return np.array(means)


def polish_prompt(
    model,
    rewards,
    start: tuple[int, ...],
    vocab: np.ndarray,
    rounds: int,
    top_k: int,
    length: int | None = None,
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
    width = length or len(current)  # the policy's observation: env.prompt_length (a blank leaves it longer)
    for _ in range(rounds):
        improved = False
        for pos in range(len(current)):
            obs = np.full((1, width), PAD, dtype=np.int64)
            obs[0, :pos] = current[:pos]
            obs_t, _ = model.policy.obs_to_tensor(obs)
            with torch.no_grad():
                logits = model.policy.get_distribution(obs_t).distribution.logits[0]
            top = torch.topk(logits, min(top_k, logits.shape[-1])).indices.cpu().numpy()
            top = [a for a in top if vocab[a] >= 0]  # not the blank: polishing keeps the prompt's length
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


class _Restarts:
    """When the policy has settled (rl.restart_window), start it again from the best training prompt."""

    def __init__(self, rl: RLConfig, model):
        import collections

        self.window, self.threshold = rl.restart_window, rl.restart_new_fraction
        self.confidence = rl.restart_confidence
        # The initial weights (before any warm start): captured before a resume loads a checkpoint.
        self.initial = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
        self.seen: set[tuple[int, ...]] = set()
        self.new = collections.deque(maxlen=self.window)  # per batch: (new prompts, prompts)
        self.best: tuple[float, tuple[int, ...]] | None = None
        self.steps: list[int] = []  # where restarts happened
        self.due = False

    def observe(self, prompts, rewards) -> None:
        """One scored batch: count its new prompts; decide whether the policy has settled."""
        fresh = {p for p in prompts if p not in self.seen}
        self.seen.update(fresh)
        self.new.append((len(fresh), len(prompts)))
        for ids, reward in zip(prompts, rewards, strict=True):
            if self.best is None or reward > self.best[0]:
                self.best = (float(reward), tuple(ids))
        if len(self.new) == self.window:
            new, total = map(sum, zip(*self.new, strict=True))
            self.due = new < self.threshold * total

    def apply(self, model, vocab, length: int, step: int) -> None:
        """Initial weights, a cleared optimizer, then behaviour cloning to the best training prompt."""
        model.policy.load_state_dict(self.initial)
        model.policy.optimizer.state.clear()  # Adam's moments belong to the settled policy
        # (a prompt shorter than env.prompt_length was written with the blank action: it is in the vocab)
        warm_start(model, self.best[1], vocab, length, self.confidence)
        self.steps.append(step)
        self.new.clear()
        self.due = False

    def state(self) -> dict:
        return {"seen": list(self.seen), "new": list(self.new), "best": self.best, "steps": list(self.steps),
                "due": self.due}  # fmt: skip

    def load(self, state: dict) -> None:
        self.seen = {tuple(p) for p in state["seen"]}
        self.new.extend(tuple(n) for n in state["new"])
        self.best = (state["best"][0], tuple(state["best"][1])) if state["best"] else None
        self.steps, self.due = list(state["steps"]), state["due"]


class _Tracker:
    """Evaluates on dev at fixed intervals, keeps the best prompt, logs metrics and shows progress."""

    def __init__(self, ctx: MethodContext, objective, env, model):
        config = ctx.config
        self.config, self.seed, self.objective = config, ctx.seed, objective
        self.env, self.model, self.run_dir, self.task = env, model, ctx.run_dir, ctx.task
        self.eval_every = max(1, config.total_timesteps // config.evaluations)
        self.vocab = env.template.action_token_ids
        self.dev = DevChoice(ctx, objective, "rl", config.rl.prompt_rule)  # best, top, chosen prompt
        self.warm: dict | None = None  # how the warm start went (rl.init_prompt), for prompt.json
        self.last_eval_step = -1
        self.recent: dict[tuple[int, ...], float] = {}  # training prompts since the last eval -> best reward
        self.rewards: list[float] = []
        self.accuracies: list[float] = []
        self.ctx = ctx
        self.last_checkpoint = 0
        self.stopping = False
        self._rng_to_restore: dict | None = None
        # Restarts (rl.restart_window): the policy's initial weights, every training prompt written, how
        # many of each recent batch's prompts were new, and the best training prompt (reward, ids).
        self.restart = _Restarts(config.rl, model) if config.rl.restart_window else None
        # Self-imitation (rl.imitate_top): the best training prompts so far -> reward, and the update count
        # at the last imitation (one imitation per update, also across a resume)
        self.elite: dict[tuple[int, ...], float] = {}
        self.imitated_at = 0
        # rl.elite_by mean: per training prompt, each distinct batch it was scored on -> its reward there
        self.batch_rewards: dict[tuple[int, ...], dict[bytes, float]] = {}
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
        if self.restart is not None and self.restart.due:  # the buffer is empty: no update mixes policies
            self.restart.apply(self.model, self.vocab, self.config.env.prompt_length, step)
        elif self.elite and self.model._n_updates != self.imitated_at:  # after each update
            targets = list(self.elite)
            if self.config.rl.imitate_crossover:  # seeded by the update count: a resume draws the same
                rng = np.random.default_rng([self.seed, self.model._n_updates])
                targets += crossover_children(targets, self.config.rl.imitate_crossover, rng)
            imitate(self.model, targets, self.vocab, self.config.env.prompt_length,
                    self.config.rl.imitate_steps)  # fmt: skip
        self.imitated_at = self.model._n_updates
        if self.ctx.checkpoint_due(step, self.last_checkpoint, self.last_eval_step > self.last_checkpoint):
            self.save_checkpoint(step)
            self.stopping = self.ctx.stop.requested

    def save_checkpoint(self, step: int, finished: bool = False) -> None:
        """``finished``: training, its last evaluation and polishing are over (a resume only tests)."""
        model, stats = self.model, self.objective.stats
        state = {
            "method": "rl", "step": step, "finished": finished, "n_updates": getattr(model, "_n_updates", 0),
            "policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict(),
            "env_rng": self.env.rng.bit_generator.state,
            **self.dev.state(), "last_eval_step": self.last_eval_step, "warm": self.warm,
            "recent": dict(self.recent), "rewards": list(self.rewards), "accuracies": list(self.accuracies),
            "scorer_stats": (stats.pairs_scored, stats.tokens_processed), "log": self.log.state(step),
            "scores": self.objective.cached_scores(),
            "restart": self.restart.state() if self.restart is not None else None,
            "elite": [[list(p), r] for p, r in self.elite.items()],
            "batch_rewards": [[list(p), list(seen.items())] for p, seen in self.batch_rewards.items()],
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
        self.dev = DevChoice(self.ctx, self.objective, "rl", self.config.rl.prompt_rule, state)
        self.warm = state.get("warm")
        self.last_eval_step = state["last_eval_step"]
        self.recent, self.rewards, self.accuracies = state["recent"], state["rewards"], state["accuracies"]
        self.objective.stats.pairs_scored, self.objective.stats.tokens_processed = state["scorer_stats"]
        self.objective.load_cached_scores(state["scores"])
        if self.restart is not None and state.get("restart"):
            self.restart.load(state["restart"])
        self.elite = {tuple(p): r for p, r in state.get("elite", [])}
        self.batch_rewards = {tuple(p): dict(seen) for p, seen in state.get("batch_rewards", [])}
        self.imitated_at = model._n_updates  # checkpoints are saved after the rollout start's imitation
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
            elite = self.objective.elite_scores(batch)
            mean = self.config.rl.elite_by == "mean"
            if mean:  # each prompt's rank: its mean over the batches it was scored on, this one included
                elite = mean_batch_rewards(self.batch_rewards, batch["prompt_ids"], elite, batch["examples"])
            for ids, reward in zip(batch["prompt_ids"], elite, strict=True):
                self.recent[ids] = reward if mean else max(reward, self.recent.get(ids, -np.inf))
            if self.restart is not None:
                self.restart.observe(batch["prompt_ids"], elite)
            if self.config.rl.imitate_top:
                for ids, reward in zip(batch["prompt_ids"], elite, strict=True):
                    best_so_far = self.elite.get(ids, -np.inf)
                    self.elite[ids] = float(reward) if mean else max(float(reward), best_so_far)
                best = sorted(self.elite.items(), key=lambda item: item[1], reverse=True)
                self.elite = dict(best[: self.config.rl.imitate_top])
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
        self.dev.add(found)  # exports the chosen prompt at once if it changed: a killed run keeps it
        best = self.dev.best
        self.log.record(
            step, max(c.dev_score for c in found), self.objective.stats.tokens_processed,
            train_reward=self.rewards[-1] if self.rewards else None,
            train_batch_accuracy=self.accuracies[-1] if self.accuracies else None,
            greedy_prompt=found[0].text, greedy_dev_score=found[0].dev_score,
            best_prompt=best.text, best_dev_reward=best.dev_reward, phase=label,
            reward_queries=int(self.objective.stats.pairs_scored),
            **({"restarts": len(self.restart.steps)} if self.restart is not None else {}),
        )  # fmt: skip
        logger = self.model.logger
        logger.record("rlprompt/greedy_dev_score", found[0].dev_score)
        logger.record("rlprompt/best_dev_score", best.dev_score)
        if self.rewards:
            logger.record("rlprompt/train_reward", self.rewards[-1])
            logger.record("rlprompt/train_batch_accuracy", self.accuracies[-1])
        logger.dump(step)
        train = f"{self.accuracies[-1]:.3f}" if self.accuracies else "—"  # no training batch scored yet
        self.log.bar.set_postfix_str(
            f"train {self.objective.metric} {train} best dev {best.dev_score:.3f} {best.text!r}"
        )

    def trained_steps(self, interrupted: bool) -> int:
        """The steps the run reports. A clean stop ends training at its checkpoint (the steps taken after
        it were not learned from, and a resume takes them again); any other end at the steps taken."""
        return self.last_checkpoint if interrupted and self.stopping else int(self.model.num_timesteps)

    def close(self) -> None:
        self.log.close()


# Prompts written again cost nothing: in the quickstart's runs (seeds 0-5, SST-2, SmolLM2) 22-36% of the
# upper bound (every prompt on every reward example) was new, so the estimate takes 30%. Training ran at
# 0.9-1.1 times the probe's warm scoring time (quickstart seeds 0-2, 2 AMD EPYC cores, float32): the policy's
# own work is about what reusing the starts of prompts already scored saves.
RL_NEW_FRACTION = 0.30
RL_POLICY_FACTOR = 1.0


def estimate(method: str, config, sizes, speed):
    """One seed's reward queries (estimate and bound) and seconds, for ``--dry-run`` (rlprompt.plan)."""
    steps = config.total_timesteps
    if config.rl.algo in ("ppo", "a2c"):  # whole rollouts of n_steps in every env: 400 steps run as 480
        rollout = config.rl.n_steps * config.env.num_envs
        steps = -(-steps // rollout) * rollout
    prompts = steps // config.env.prompt_length
    dev_pairs = sizes.evaluations * (1 + config.candidates_per_eval) * sizes.dev
    bound = prompts * min(config.env.examples_per_reward, sizes.train) + dev_pairs
    queries = int(RL_NEW_FRACTION * (bound - dev_pairs) + dev_pairs)
    budget = config.reward_query_budget("rl")
    if budget:
        queries, bound = min(queries, budget), min(bound, budget)
    seconds = queries / speed.warm * RL_POLICY_FACTOR + sizes.test_seconds(tested_prompts(config))
    return Estimate(queries, bound, seconds)
