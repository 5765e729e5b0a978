"""Soft Q-learning (SQL), RLPrompt's algorithm, as a Stable-Baselines3 algorithm.

The policy's action logits are read as Q-values and the state value is their log-sum-exp, so the policy
is the softmax of Q. Episodes are short (one prompt) with one reward at the end. Each update fits Q to
two path-consistency targets computed with a target network (a Polyak-averaged copy of the trainable
head), and averages the two losses:

* single-step: ``Q(s_t, a_t) -> r_t + V_target(s_{t+1})`` (``V = 0`` after the last token);
* multi-step: ``Q(s_t, a_t) -> R - sum_{k>t} log pi_target(a_k | s_k)`` (the terminal reward minus the
  target policy's log-probabilities of the rest of the episode).

Sampling is on-policy from the top-k Q-values; optionally, past episode batches are replayed.
Reference values (RLPrompt): learning rate 5e-5, Polyak rate 1e-3, top-k 256, 16 prompts per batch.

Works with any SB3 ``ActorCriticPolicy`` whose action head gives logits (the value head is unused), and
with ``PromptVecEnv``: ``learn``, ``predict`` (greedy = argmax Q), ``save``, ``load``, callbacks and the
logger behave as for PPO.
"""

from __future__ import annotations

import copy
from collections import deque

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import obs_as_tensor, polyak_update


class SQL(BaseAlgorithm):
    """Soft Q-learning with path-consistency losses (see the module docstring).

    Args (beyond SB3's):
        polyak: target-network update rate per gradient step.
        top_k: sample actions among the k largest Q-values (0: the whole vocabulary).
        gradient_steps: updates per batch of episodes.
        replay_size: past episode batches kept for replay (0: purely on-policy).
        replay_batches: replayed batches trained on after each fresh one.
        max_grad_norm: gradient clipping.
        reward_scale: rewards are multiplied by this before the losses (the inverse of the soft-Q
            temperature): z-scored rewards of about ±1 can only tilt a softmax over 1,000 tokens a little.
    """

    def __init__(
        self,
        policy,
        env,
        learning_rate: float = 5e-5,
        polyak: float = 1e-3,
        top_k: int = 256,
        gradient_steps: int = 1,
        replay_size: int = 0,
        replay_batches: int = 0,
        max_grad_norm: float = 5.0,
        reward_scale: float = 1.0,
        policy_kwargs: dict | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy, env, learning_rate, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, seed=seed, support_multi_env=True,
            supported_action_spaces=(spaces.Discrete,),
        )  # fmt: skip
        self.polyak = polyak
        self.top_k = top_k
        self.gradient_steps = gradient_steps
        self.replay_size = replay_size
        self.replay_batches = replay_batches
        self.max_grad_norm = max_grad_norm
        self.reward_scale = reward_scale
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        # The target copies only the trainable head; the (frozen, cached) feature extractor is shared.
        self.target_extractor = copy.deepcopy(self.policy.mlp_extractor).requires_grad_(False)
        self.target_head = copy.deepcopy(self.policy.action_net).requires_grad_(False)
        self.replay: deque = deque(maxlen=max(self.replay_size, 1))
        self._rng = np.random.default_rng(self.seed)

    def _q_values(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        features = self.policy.extract_features(obs, self.policy.features_extractor)
        extractor = self.target_extractor if target else self.policy.mlp_extractor
        head = self.target_head if target else self.policy.action_net
        latent_pi, _ = extractor(features)
        return head(latent_pi)

    def _sample(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = self._q_values(obs_as_tensor(obs, self.device))
            if self.top_k and self.top_k < q.shape[-1]:
                kth = torch.topk(q, self.top_k, dim=-1).values[:, -1:]
                q = q.masked_fill(q < kth, float("-inf"))
            probs = torch.softmax(q, dim=-1).cpu().numpy().astype(np.float64)
        probs /= probs.sum(-1, keepdims=True)
        return np.array([self._rng.choice(len(p), p=p) for p in probs])

    def _loss(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> torch.Tensor:
        """Mean of the single- and multi-step path-consistency losses on a batch of episodes:
        observations (T, n, obs), actions (T, n), rewards (T, n)."""
        steps, n = actions.shape
        obs = obs_as_tensor(observations.reshape(steps * n, -1), self.device)
        acts = torch.as_tensor(actions.reshape(-1), device=self.device).long()
        q = self._q_values(obs)
        q_taken = q.gather(1, acts[:, None]).squeeze(1).view(steps, n)
        with torch.no_grad():
            q_target = self._q_values(obs, target=True)
            v_target = torch.logsumexp(q_target, dim=-1).view(steps, n)
            logp_target = q_target.gather(1, acts[:, None]).squeeze(1).view(steps, n) - v_target
            r = torch.as_tensor(rewards, device=self.device, dtype=q.dtype) * self.reward_scale
            v_next = torch.cat([v_target[1:], torch.zeros_like(v_target[:1])])
            single = r + v_next
            # Rewards to go, minus the target policy's log-probs of the actions after t.
            returns = torch.flip(torch.cumsum(torch.flip(r, [0]), 0), [0])
            later_logp = torch.flip(torch.cumsum(torch.flip(logp_target, [0]), 0), [0]) - logp_target
            multi = returns - later_logp
        single_loss = 0.5 * ((q_taken - single) ** 2).mean()
        multi_loss = 0.5 * ((q_taken - multi) ** 2).mean()
        self.logger.record("train/single_step_loss", single_loss.item())
        self.logger.record("train/multi_step_loss", multi_loss.item())
        return 0.5 * (single_loss + multi_loss)

    def _train_on(self, batch) -> None:
        self.policy.set_training_mode(True)
        loss = self._loss(*batch)
        self.policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        polyak_update(self.policy.mlp_extractor.parameters(), self.target_extractor.parameters(), self.polyak)
        polyak_update(self.policy.action_net.parameters(), self.target_head.parameters(), self.polyak)
        self.logger.record("train/loss", loss.item())
        self._n_updates += 1

    def learn(self, total_timesteps: int, callback=None, log_interval: int = 1, tb_log_name: str = "SQL",
              reset_num_timesteps: bool = True, progress_bar: bool = False):  # fmt: skip
        self._n_updates = getattr(self, "_n_updates", 0)
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        episodes = 0
        while self.num_timesteps < total_timesteps:
            callback.on_rollout_start()
            observations, actions, rewards = [], [], []
            done = np.zeros(self.n_envs, dtype=bool)
            while not done.all():  # one episode (a prompt) per environment, all of equal length
                obs = self._last_obs
                action = self._sample(obs)
                new_obs, reward, dones, infos = self.env.step(action)
                self.num_timesteps += self.n_envs
                observations.append(obs)
                actions.append(action)
                rewards.append(reward)
                done = done | dones
                self._last_obs = new_obs
                callback.update_locals(locals())
                if not callback.on_step():
                    callback.on_training_end()
                    return self
            batch = (np.stack(observations), np.stack(actions), np.stack(rewards).astype(np.float32))
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self._update_learning_rate(self.policy.optimizer)
            for _ in range(self.gradient_steps):
                self._train_on(batch)
            if self.replay_size:
                for i in self._rng.integers(
                    len(self.replay), size=min(self.replay_batches, len(self.replay))
                ):
                    self._train_on(self.replay[int(i)])
                self.replay.append(batch)
            episodes += 1
            self.logger.record("train/n_updates", self._n_updates)
            self.logger.record("rollout/reward_mean", float(np.mean(batch[2].sum(0))))
            if log_interval and episodes % log_interval == 0:
                self.logger.dump(self.num_timesteps)
        callback.on_training_end()
        return self

    def _get_torch_save_params(self):
        # The target head is saved too, so that training resumes with it (it is small).
        return ["policy", "policy.optimizer", "target_extractor", "target_head"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "target_extractor", "target_head", "replay", "_rng"]
