"""PromptEnv / PromptVecEnv against the Gymnasium and SB3 checkers, and PPO learning with the token policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from rlprompt.envs.prompt_env import PAD, PromptEnv, PromptVecEnv, StylePromptEnv, gap_reward
from rlprompt.policies.token_policy import TokenPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlprompt.backends.hf import Scorer
from rlprompt.methods.rl import greedy_prompt
from rlprompt.models import register_model
from rlprompt.style import StyleObjective
from rlprompt.tasks import Example


class ToyScorer:
    """A reward without an LM: the right label's log-prob grows with the tokens matching a target prompt."""

    def __init__(self, lm, target: tuple[int, ...]):
        self.lm, self.target = lm, target
        self.calls = 0

    def score(self, prompts, examples):
        self.calls += 1
        out = np.zeros((len(prompts), len(examples), 2), dtype=np.float32)
        for i, prompt in enumerate(prompts):
            matches = sum(a == b for a, b in zip(prompt, self.target, strict=True))
            out[i, :, 1] = -3.0 + 2.0 * matches  # label 1 is right for every example
        return out


def _trained_ppo(env, vocab):
    """PPO with the token policy on tiny-llama, 60 batches of 16 three-token prompts (the learning tests)."""
    torch.manual_seed(0)
    model = PPO(
        TokenPolicy, env, n_steps=3, batch_size=48, n_epochs=4, learning_rate=3e-3, gamma=1.0, gae_lambda=1.0,
        ent_coef=0.0, seed=0,
        policy_kwargs={"backbone": "tiny-llama", "action_token_ids": vocab, "adapter_hidden": 64},
    )  # fmt: skip
    model.learn(total_timesteps=16 * 3 * 60)
    return model


def test_gap_reward_follows_rlprompt():
    # Two examples, label 1 and 0; probabilities (0.2, 0.8) for both.
    logprobs = np.log(np.array([[[0.2, 0.8], [0.2, 0.8]]]))
    reward = gap_reward(logprobs, np.array([1, 0]))
    np.testing.assert_allclose(reward, [(200 * 0.6 + 180 * -0.6) / 2])


def test_loglik_reward_is_minus_the_cross_entropy_and_punishes_confident_errors():
    from rlprompt.envs.prompt_env import label_reward

    labels = np.array([1, 0])
    # Prompt A: both right, barely (0.45/0.55 and 0.55/0.45). Prompt B: one right at 0.99, one wrong at
    # 0.9 (0.01/0.99 and 0.1/0.9). Unnormalised log-probs, as the Scorer gives.
    logprobs = np.log(np.array([[[0.45, 0.55], [0.55, 0.45]], [[0.01, 0.99], [0.1, 0.9]]])) - 3.0
    loglik = label_reward(logprobs, labels, "loglik")
    np.testing.assert_allclose(loglik, [np.log(0.55), (np.log(0.99) + np.log(0.1)) / 2], rtol=1e-6)
    gap = label_reward(logprobs, labels, "gap")
    np.testing.assert_allclose(gap, gap_reward(logprobs, labels))
    # The gap reward prefers B (its sure hit outweighs its sure miss: (200 * 0.98 - 180 * 0.8) / 2 = 26
    # against 200 * 0.1 = 20); the log-likelihood prefers A, as cross-entropy would.
    assert gap[1] > gap[0] and loglik[0] > loglik[1]


def test_env_pays_the_reward_it_is_given(tiny_gpt2, examples):
    from rlprompt.envs.prompt_env import label_reward

    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", ["terrible", "great"], prompt_budget=8)
    vocab = tiny_gpt2.encode(" good bad movie film really")
    prompts = [tuple(vocab[:3]), tuple(vocab[2:5])]
    logprobs = scorer.score(prompts, examples)
    labels = np.array([ex.label for ex in examples])
    for kind in ("gap", "loglik"):
        env = PromptEnv(scorer, examples, vocab, 3, examples_per_reward=len(examples), reward=kind)
        rewards, _ = env.score_prompts(prompts, np.random.default_rng(0))  # every example, in some order
        np.testing.assert_allclose(rewards, label_reward(logprobs, labels, kind), rtol=1e-5, atol=1e-6)


def test_env_passes_gymnasium_and_sb3_checkers(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", ["terrible", "great"], prompt_budget=8)
    vocab = tiny_gpt2.encode(" good bad movie film really")
    env = PromptEnv(scorer, examples, vocab, prompt_length=3, examples_per_reward=4)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [PAD] * 3
    for step in range(3):
        obs, reward, terminated, truncated, info = env.step(step)
    assert terminated and not truncated
    assert obs.tolist() == vocab[:3]
    assert info["prompt"] == " good bad movie" and 0 <= info["accuracy"] <= 1
    assert reward == pytest.approx(float(reward))


def test_vec_env_scores_all_prompts_in_one_call_and_normalises(tiny_gpt2, examples):
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", ["terrible", "great"], prompt_budget=8)
    vocab = tiny_gpt2.encode(" good bad movie film really")
    env = PromptVecEnv(scorer, examples, vocab, num_envs=4, prompt_length=2, examples_per_reward=3, seed=0)
    obs = env.reset()
    assert obs.shape == (4, 2) and (obs == PAD).all()
    obs, rewards, dones, infos = env.step(np.array([0, 1, 2, 3]))
    assert not dones.any() and (rewards == 0).all() and obs[:, 0].tolist() == vocab[:4]
    obs, rewards, dones, infos = env.step(np.array([4, 3, 2, 1]))
    assert dones.all() and (obs == PAD).all()  # auto-reset
    assert infos[0]["terminal_observation"].tolist() == [vocab[0], vocab[4]]
    assert scorer.stats.pairs_scored == 4 * 3  # one call, the same 3 examples for all prompts
    assert abs(rewards.mean()) < 1e-5 and abs(rewards.std() - 1) < 1e-3


def test_ppo_with_the_token_policy_finds_the_target_prompt(tiny_llama):
    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    target = (vocab[5], vocab[2], vocab[7])
    scorer = ToyScorer(tiny_llama, target)
    examples = [Example(f"e{i}", "x", 1) for i in range(4)]
    env = PromptVecEnv(scorer, examples, vocab, num_envs=16, prompt_length=3, examples_per_reward=4, seed=0)
    model = _trained_ppo(env, vocab)
    assert greedy_prompt(model, vocab, 3) == target
    # Only the adapter, value head and logit gain are trainable; the backbone is not in the checkpoint.
    state = model.policy.state_dict()
    assert not any("lm" in k or "embed" in k for k in state)
    assert sum(v.numel() for v in state.values()) < 20_000


class ToyStyleObjective:
    """The style objective's reward shaping (per-input z-scores, from ``StyleObjective.train_rewards``) over
    a made-up best-joint score: each target token in its place adds 30; each input adds its own offset
    (some sentences are easier to rewrite than others), which the per-input z-scoring must remove."""

    train_rewards = StyleObjective.train_rewards

    def __init__(self, lm, target):
        self.lm, self.target, self.samples = lm, target, 1
        self.task = type("Task", (), {"train": [f"sentence {i}" for i in range(6)]})()

    def best_joint(self, prompts, sentences, samples):
        offsets = np.array([int(s.split()[1]) * 10.0 for s in sentences])
        hits = np.array([sum(a == b for a, b in zip(p, self.target, strict=True)) for p in prompts])
        return 10.0 + 30.0 * hits[:, None] + offsets[None, :]


def test_style_rewards_are_z_scored_per_input_not_over_prompt_means():
    toy = ToyStyleObjective.__new__(ToyStyleObjective)
    toy.samples = 1
    # Input 0 prefers prompt 0 by a little, input 1 prefers prompt 1 by a lot: per input, each prompt wins
    # once (z-scores +1 and -1), so both rewards are 0; z-scoring the prompts' means would favour prompt 1.
    toy.best_joint = lambda prompts, sentences, samples: np.array([[10.0, 0.0], [0.0, 100.0]])
    rewards, joint = toy.train_rewards([(1,), (2,)], ["a", "b"])
    np.testing.assert_allclose(rewards, [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(joint, [0.05, 0.5])
    # Column z-scores: (10, 0, 5) -> (1.2247, -1.2247, 0); (0, 100, 100) -> (-1.4142, 0.7071, 0.7071).
    toy.best_joint = lambda prompts, sentences, samples: np.array([[10.0, 0.0], [0.0, 100.0], [5.0, 100.0]])
    rewards, _ = toy.train_rewards([(1,), (2,), (3,)], ["a", "b"])
    np.testing.assert_allclose(rewards, [-0.0947, -0.2588, 0.3536], atol=1e-4)


def test_ppo_finds_the_target_prompt_in_the_style_env(tiny_llama):
    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    target = (vocab[3], vocab[6], vocab[1])
    env = PromptVecEnv.of(StylePromptEnv(ToyStyleObjective(tiny_llama, target), vocab, 3, 3), num_envs=16)
    rewards, joint = env.template.score_prompts([target, (vocab[0],) * 3], np.random.default_rng(0))
    assert rewards[0] > 0 > rewards[1]
    model = _trained_ppo(env, vocab)
    assert greedy_prompt(model, vocab, 3) == target


def test_polish_accepts_only_single_token_changes_that_raise_the_training_reward(tiny_gpt2, tmp_path):
    from rlprompt.envs.prompt_env import gap_reward

    from rlprompt.backends.hf import Scorer
    from rlprompt.config import TrainConfig
    from rlprompt.methods.rl import _make_algorithm, polish_prompt
    from rlprompt.models import register_model
    from rlprompt.tasks import Example
    from rlprompt.vocab import action_vocabulary

    register_model(tiny_gpt2)
    sentences = ["a gorgeous , witty movie .", "strictly routine .", "warm and wise .", "a dull mess ."]
    train = [Example(f"p/{i}", s, (i + 1) % 2) for i, s in enumerate(sentences)]
    scorer = Scorer(tiny_gpt2, "{sentence} {prompt}", ["bad", "good"], prompt_budget=8)
    vocab = action_vocabulary(tiny_gpt2, "frequent", 40)
    config = TrainConfig(model="tiny-gpt2")
    config.policy.adapter_hidden = 16
    config.env.num_envs, config.env.examples_per_reward = 4, 4
    config.rl.batch_size = 4 * config.rl.n_steps  # one PPO minibatch per rollout of 4 envs
    env = PromptVecEnv(scorer, train, vocab, num_envs=4, prompt_length=5, examples_per_reward=4, seed=0)
    model = _make_algorithm(config, 0, env, vocab, "tiny-gpt2", tmp_path)
    start = tuple(int(t) for t in vocab[:5])
    labels = np.array([ex.label for ex in train])

    def train_reward(prompts):
        return gap_reward(scorer.score(prompts, train), labels)

    accepted = polish_prompt(model, train_reward, start, vocab, 3, 40)
    assert accepted, "coordinate ascent over 40 tokens per position found nothing better on a random model"
    rewards = train_reward([start, *accepted])
    assert np.all(np.diff(rewards) > 0)
    for before, after in zip([start, *accepted], accepted, strict=False):
        assert sum(a != b for a, b in zip(before, after, strict=True)) == 1


def test_sql_with_the_token_policy_finds_the_target_prompt(tiny_llama, tmp_path):
    from rlprompt.sql import SQL

    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    target = (vocab[5], vocab[2], vocab[7])
    scorer = ToyScorer(tiny_llama, target)
    examples = [Example(f"e{i}", "x", 1) for i in range(4)]
    # Raw rewards in [-3, 3]: Q-learning targets need a reward scale that does not move with the policy.
    env = PromptVecEnv(scorer, examples, vocab, num_envs=16, prompt_length=3, examples_per_reward=4, seed=0,
                       normalize=False, correct_scale=3.0, wrong_scale=3.0)  # fmt: skip
    torch.manual_seed(0)
    model = SQL(
        TokenPolicy, env, learning_rate=1e-2, polyak=0.05, top_k=0, replay_size=8, replay_batches=1, seed=0,
        policy_kwargs={"backbone": "tiny-llama", "action_token_ids": vocab, "adapter_hidden": 64},
    )  # fmt: skip
    model.learn(total_timesteps=16 * 3 * 60)
    assert greedy_prompt(model, vocab, 3) == target
    # save / load round trip: the same greedy actions
    model.save(tmp_path / "sql.zip")
    loaded = SQL.load(tmp_path / "sql.zip", env=env)
    probe = np.array([[PAD, PAD, PAD], [target[0], PAD, PAD], [target[0], target[1], PAD]])
    assert (
        loaded.predict(probe, deterministic=True)[0].tolist()
        == model.predict(probe, deterministic=True)[0].tolist()
    )


def test_sql_saves_its_target_head(tiny_llama, tmp_path):
    from rlprompt.sql import SQL

    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film")
    env = PromptVecEnv(ToyScorer(tiny_llama, (vocab[0], vocab[1])), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=2, examples_per_reward=1, seed=0)  # fmt: skip
    kwargs = {"backbone": "tiny-llama", "action_token_ids": vocab, "adapter_hidden": 16}
    model = SQL(TokenPolicy, env, learning_rate=1e-2, polyak=0.5, top_k=0, seed=0, policy_kwargs=kwargs)
    model.learn(4 * 2 * 5)
    model.save(tmp_path / "sql.zip")
    loaded = SQL.load(tmp_path / "sql.zip", env=env)
    for name, module in (("target_head", model.target_head), ("target_extractor", model.target_extractor)):
        for a, b in zip(module.parameters(), getattr(loaded, name).parameters(), strict=True):
            assert torch.equal(a, b)
    # ... and it differs from the online head after training (Polyak averaging lags behind).
    assert not all(
        torch.equal(a, b)
        for a, b in zip(model.target_head.parameters(), model.policy.action_net.parameters(), strict=True)
    )
