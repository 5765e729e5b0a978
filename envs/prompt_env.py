"""Environments in which an agent writes a prompt token by token and a frozen LM pays the reward.

``PromptWriterEnv`` is a plain Gymnasium environment (one prompt at a time); ``PromptEnv`` scores a prompt
on classification examples (the gap reward) and ``StylePromptEnv`` on style-transfer inputs (the style
objective's rewrite reward). ``PromptVecEnv`` is what training
uses: a Stable-Baselines3 ``VecEnv`` whose environments all finish their prompts on the same step, so all
prompts are scored in one Scorer call on the same training examples and their rewards are z-scored within
the batch, as RLPrompt does.

Observation: the prompt so far as token ids, padded with -1 to ``prompt_length`` (an int64 ``Box``; SB3
would one-hot a ``MultiDiscrete``). Action: an index into the action vocabulary. Reward: 0 until the last
token, then the shaped reward of the finished prompt on a batch of training examples. An action vocabulary
may end with ``BLANK`` (-2), a step that writes nothing: prompts then have up to ``prompt_length`` tokens
(a warm start from a shorter prompt needs it, see ``rl.init_prompt``); the prompt scored is the tokens
written, blanks left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from rlprompt.calibration import calibrate, normalised
from rlprompt.scoring import LabelScorer
from rlprompt.tasks import Example

PAD = -1
BLANK = -2  # the action that writes no token


def written(row) -> tuple[int, ...]:
    """The prompt a row of actions' tokens spells: its token ids, blanks and padding left out."""
    return tuple(int(t) for t in row if t >= 0)


# A calibrated reward: (prompts, their log-probs on the reward batch (prompts, examples, classes)) -> each
# prompt's log label prior (prompts, classes); see rlprompt.calibration.
RewardPrior = Callable[[list[tuple[int, ...]], np.ndarray], np.ndarray]


def gap_reward(
    logprobs: np.ndarray, labels: np.ndarray, correct_scale: float = 200.0, wrong_scale: float = 180.0
) -> np.ndarray:
    """RLPrompt's reward per prompt: over examples, the mean gap between the probability of the right label
    and the best wrong one (probabilities renormalised over the labels), scaled by ``correct_scale`` when the
    gap is positive (the example is classified right) and ``wrong_scale`` when not.

    ``logprobs``: (prompts, examples, classes); ``labels``: (examples,). Returns (prompts,).
    """
    probs = np.exp(logprobs - logprobs.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    idx = np.arange(len(labels))
    right = probs[:, idx, labels]
    wrong = probs.copy()
    wrong[:, idx, labels] = -np.inf
    gap = right - wrong.max(-1)
    return np.where(gap > 0, correct_scale * gap, wrong_scale * gap).mean(-1)


def loglik_reward(logprobs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per prompt: the mean log-probability of the right label, renormalised over the labels (minus the
    cross-entropy the gradient methods minimise). Unlike the gap it keeps falling as a wrong answer grows
    more confident. ``logprobs``: (prompts, examples, classes); ``labels``: (examples,). Returns
    (prompts,)."""
    return normalised(logprobs)[:, np.arange(len(labels)), labels].mean(-1)


def label_reward(
    logprobs: np.ndarray,
    labels: np.ndarray,
    kind: str = "gap",
    correct_scale: float = 200.0,
    wrong_scale: float = 180.0,
) -> np.ndarray:
    """The training reward ``env.reward`` names: ``gap`` (:func:`gap_reward`) or ``loglik``
    (:func:`loglik_reward`)."""
    if kind == "loglik":
        return loglik_reward(logprobs, labels)
    return gap_reward(logprobs, labels, correct_scale, wrong_scale)


def batch_accuracy(logprobs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy per prompt of argmax predictions: (prompts, examples, classes) -> (prompts,)."""
    return (logprobs.argmax(-1) == labels[None, :]).mean(-1)


class PromptWriterEnv(gym.Env):
    """Write ``prompt_length`` tokens; the reward comes after the last one (see the module docstring).
    Subclasses say how a batch of finished prompts is scored (``score_prompts``)."""

    metadata = {"render_modes": []}

    def __init__(self, lm, action_token_ids: Sequence[int], prompt_length: int):
        super().__init__()
        if prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {prompt_length}")
        self.lm = lm
        self.action_token_ids = np.asarray(action_token_ids, dtype=np.int64)
        self.prompt_length = prompt_length
        vocab_size = max(len(lm.tokenizer), int(self.action_token_ids.max()) + 1)
        low = (
            BLANK if (self.action_token_ids == BLANK).any() else PAD
        )  # as before blanks, when there are none
        self.observation_space = gym.spaces.Box(low, vocab_size - 1, shape=(prompt_length,), dtype=np.int64)
        self.action_space = gym.spaces.Discrete(len(self.action_token_ids))
        self._prompt: list[int] = []
        self.last_chosen: np.ndarray | None = None  # the training inputs the last score_prompts read

    def score_prompts(
        self, prompts: list[tuple[int, ...]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the reward and a progress figure in [0, 1] (accuracy, or the style joint score), on
        one batch of training inputs drawn with ``rng``."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        return self.lm.decode(list(ids))

    def _observation(self) -> np.ndarray:
        obs = np.full(self.prompt_length, PAD, dtype=np.int64)
        obs[: len(self._prompt)] = self._prompt
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._prompt = []
        return self._observation(), {}

    def step(self, action):
        self._prompt.append(int(self.action_token_ids[int(action)]))
        if len(self._prompt) < self.prompt_length:
            return self._observation(), 0.0, False, False, {}
        prompt = written(self._prompt)
        reward, accuracy = self.score_prompts([prompt], self.np_random)
        info = {
            "prompt": self.decode(prompt),
            "prompt_ids": list(prompt),
            "accuracy": float(accuracy[0]),
        }
        return self._observation(), float(reward[0]), True, False, info


class PromptEnv(PromptWriterEnv):
    """Classification: the reward is RLPrompt's gap reward of the prompt on ``examples_per_reward``
    training examples; with ``reward_prior``, of its calibrated scores (the prompt's label prior removed).
    ``to_task`` turns the policy's token ids into what the task LM reads (its text, when the policy's
    tokenizer is another); ``policy_lm`` is the policy's model (its vocabulary bounds the observations)."""

    def __init__(
        self,
        scorer: LabelScorer,
        examples: Sequence[Example],
        action_token_ids: Sequence[int],
        prompt_length: int = 5,
        examples_per_reward: int = 16,
        correct_scale: float = 200.0,
        wrong_scale: float = 180.0,
        reward_prior: RewardPrior | None = None,
        to_task: Callable[[tuple[int, ...]], object] | None = None,
        policy_lm=None,
        reward: str = "gap",
    ):
        super().__init__(policy_lm or scorer.lm, action_token_ids, prompt_length)
        self.reward = reward
        self.scorer = scorer
        self.to_task = to_task
        self.examples = list(examples)
        self.labels = np.array([ex.label for ex in self.examples])
        self.examples_per_reward = min(examples_per_reward, len(self.examples))
        self.scales = (correct_scale, wrong_scale)
        self.reward_prior = reward_prior

    def score_prompts(
        self, prompts: list[tuple[int, ...]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gap reward and accuracy of each prompt on one batch of training examples drawn with ``rng``
        (every prompt sees the same examples, in one Scorer call)."""
        chosen = rng.choice(len(self.examples), size=self.examples_per_reward, replace=False)
        self.last_chosen = chosen
        if self.to_task is not None:  # the policy's tokens, as the task LM reads them
            prompts = [self.to_task(p) for p in prompts]
        logprobs = self.scorer.score(prompts, [self.examples[i] for i in chosen])
        if self.reward_prior is not None:  # calibrated reward: each prompt's label prior removed first
            logprobs = calibrate(logprobs, self.reward_prior(prompts, logprobs))
        labels = self.labels[chosen]
        return label_reward(logprobs, labels, self.reward, *self.scales), batch_accuracy(logprobs, labels)


class StylePromptEnv(PromptWriterEnv):
    """Style transfer: the reward of a prompt is the style objective's (best-of-samples joint score of its
    rewrites, z-scored per input across the batch) on ``inputs_per_reward`` training inputs. The z-scores
    need a batch of prompts: use it inside :class:`PromptVecEnv` (alone, every reward is 0)."""

    def __init__(self, objective, action_token_ids: Sequence[int], prompt_length: int = 5,
                 inputs_per_reward: int = 4):  # fmt: skip
        super().__init__(objective.lm, action_token_ids, prompt_length)
        self.objective = objective
        self.inputs = list(objective.task.train)
        self.inputs_per_reward = min(inputs_per_reward, len(self.inputs))

    def score_prompts(
        self, prompts: list[tuple[int, ...]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        chosen = rng.choice(len(self.inputs), size=self.inputs_per_reward, replace=False)
        self.last_chosen = chosen
        return self.objective.train_rewards(prompts, [self.inputs[i] for i in chosen])


class PromptVecEnv(VecEnv):
    """``num_envs`` prompt writers in lockstep; all prompts are scored together (see the module docstring).

    Each finished batch is scored on the same ``examples_per_reward`` training examples, drawn with the
    env's own seeded generator. With ``normalize`` the rewards are z-scored within the batch.
    """

    def __init__(
        self,
        scorer: LabelScorer,
        examples: Sequence[Example],
        action_token_ids: Sequence[int],
        num_envs: int = 16,
        prompt_length: int = 5,
        examples_per_reward: int = 16,
        correct_scale: float = 200.0,
        wrong_scale: float = 180.0,
        normalize: bool = True,
        seed: int = 0,
        reward_prior: RewardPrior | None = None,
        to_task: Callable[[tuple[int, ...]], object] | None = None,
        policy_lm=None,
        reward: str = "gap",
    ):
        template = PromptEnv(
            scorer, examples, action_token_ids, prompt_length, examples_per_reward, correct_scale,
            wrong_scale, reward_prior, to_task, policy_lm, reward,
        )  # fmt: skip
        self._wrap(template, num_envs, normalize, seed)

    @classmethod
    def of(cls, template: PromptWriterEnv, num_envs: int = 16, normalize: bool = True, seed: int = 0):
        """``num_envs`` copies of any prompt-writing env (e.g. a :class:`StylePromptEnv`) in lockstep."""
        env = cls.__new__(cls)
        env._wrap(template, num_envs, normalize, seed)
        return env

    def _wrap(self, template: PromptWriterEnv, num_envs: int, normalize: bool, seed: int) -> None:
        self.template = template  # before VecEnv.__init__, which reads attributes through get_attr
        super().__init__(num_envs, template.observation_space, template.action_space)
        self.normalize = normalize
        self.rng = np.random.default_rng(seed)
        self._prompts = np.full((num_envs, template.prompt_length), PAD, dtype=np.int64)
        self._length = 0
        self._actions: np.ndarray | None = None
        self.last_batch: dict = {}  # the last scored batch: prompts, raw rewards, accuracies

    def reset(self) -> np.ndarray:
        self._prompts[:] = PAD
        self._length = 0
        return self._prompts.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        env = self.template
        self._prompts[:, self._length] = env.action_token_ids[self._actions]
        self._length += 1
        if self._length < env.prompt_length:
            rewards = np.zeros(self.num_envs, dtype=np.float32)
            return (
                self._prompts.copy(),
                rewards,
                np.zeros(self.num_envs, dtype=bool),
                [{} for _ in range(self.num_envs)],
            )
        prompts = [written(row) for row in self._prompts]
        raw, accuracy = env.score_prompts(prompts, self.rng)
        rewards = raw
        if self.normalize:
            rewards = (raw - raw.mean()) / (raw.std() + 1e-8)
        texts = [env.decode(p) for p in prompts]
        # "examples": which training inputs the batch read, as a key (sorted: the same set in another order
        # is the same batch)
        examples = np.sort(env.last_chosen).tobytes()
        self.last_batch = {"prompts": texts, "prompt_ids": prompts, "rewards": raw, "accuracy": accuracy,
                           "examples": examples}  # fmt: skip
        infos = [
            {
                "terminal_observation": self._prompts[i].copy(),
                "prompt": texts[i],
                "accuracy": float(accuracy[i]),
                "raw_reward": float(raw[i]),
            }  # fmt: skip
            for i in range(self.num_envs)
        ]
        obs = self.reset()
        return obs, rewards.astype(np.float32), np.ones(self.num_envs, dtype=bool), infos

    # -- VecEnv plumbing: the environments are not separate objects --------------------------------

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.template, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self.template, attr_name, value)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        return [
            getattr(self.template, method_name)(*method_args, **method_kwargs) for _ in self._indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def seed(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


def register() -> None:
    """Register ``rlprompt/DiscretePrompt-v0`` with Gymnasium (idempotent)."""
    if "rlprompt/DiscretePrompt-v0" not in gym.registry:
        gym.register(id="rlprompt/DiscretePrompt-v0", entry_point="rlprompt.envs.prompt_env:PromptEnv")
