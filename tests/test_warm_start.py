"""Warm starts (``rl.init_prompt``) and the blank action that lets a policy write a shorter prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rlprompt.envs.prompt_env import BLANK, PAD, PromptEnv, PromptVecEnv
from rlprompt.policies.token_policy import TokenPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlprompt.methods.rl import greedy_prompt, start_prompt_ids, warm_start, with_start_prompt
from rlprompt.models import register_model
from rlprompt.tasks import Example
from tests.conftest import train_cli, write_task
from tests.test_methods import ROWS


class LengthScorer:
    """A reward without an LM: the right label's log-prob grows with each token in its place of a target
    prompt and falls with each token the prompt has too many or too few."""

    def __init__(self, lm, target: tuple[int, ...]):
        self.lm, self.target = lm, target
        self.lengths: list[int] = []

    def score(self, prompts, examples):
        out = np.zeros((len(prompts), len(examples), 2), dtype=np.float32)
        for i, prompt in enumerate(prompts):
            self.lengths.append(len(prompt))
            hits = sum(a == b for a, b in zip(prompt, self.target, strict=False))
            out[i, :, 1] = -3.0 + 2.0 * hits - 2.0 * abs(len(prompt) - len(self.target))
        return out


class _Objective:
    """What start_prompt_ids needs of an objective: a text prompt in the policy's tokens."""

    def __init__(self, lm):
        self.lm = lm

    def policy_prompt_ids(self, text):
        return tuple(self.lm.encode(" " + text))


def _ppo(env, vocab, seed=0):
    torch.manual_seed(seed)
    return PPO(
        TokenPolicy, env, n_steps=3, batch_size=3 * env.num_envs, n_epochs=4, learning_rate=3e-3, gamma=1.0,
        gae_lambda=1.0, ent_coef=0.0, seed=seed,
        policy_kwargs={"backbone": "tiny-llama", "action_token_ids": vocab, "adapter_hidden": 64},
    )  # fmt: skip


def test_blank_steps_write_nothing_and_the_env_still_passes_the_checkers(tiny_llama):
    vocab = [*tiny_llama.encode(" good bad movie"), BLANK]
    env = PromptEnv(
        LengthScorer(tiny_llama, ()), [Example("e", "x", 1)], vocab, prompt_length=3, examples_per_reward=1
    )
    sb3_check_env(env)
    env.reset(seed=0)
    env.step(3)  # blank
    env.step(0)
    _, _, done, _, info = env.step(3)
    assert done and info["prompt_ids"] == [vocab[0]]  # one token written, blanks left out


def test_ppo_with_a_blank_action_learns_a_prompt_shorter_than_its_length(tiny_llama):
    register_model(tiny_llama)
    words = tiny_llama.encode(" good bad movie film really plot acting story")
    vocab = [*words, BLANK]
    target = (words[5], words[2])
    scorer = LengthScorer(tiny_llama, target)
    env = PromptVecEnv(scorer, [Example(f"e{i}", "x", 1) for i in range(4)], vocab, num_envs=16,
                       prompt_length=3, examples_per_reward=4, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    model.learn(total_timesteps=16 * 3 * 60)
    assert greedy_prompt(model, vocab, 3) == target
    assert min(scorer.lengths) < 3  # the blank was taken during training, not only at the end


def test_warm_start_moves_the_greedy_prompt_to_the_start_prompt_and_no_further(tiny_llama):
    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    start = start_prompt_ids(_Objective(tiny_llama), tiny_llama, "It was", 4)
    assert not set(start) & set(vocab)  # neither token is in the action vocabulary yet
    vocab = with_start_prompt(vocab, start, 4)
    assert vocab[-1] == BLANK and set(start) <= set(vocab)
    env = PromptVecEnv(LengthScorer(tiny_llama, start), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=4, examples_per_reward=1, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    assert greedy_prompt(model, vocab, 4) != start
    steps, probs = warm_start(model, start, vocab, 4, confidence=0.5)
    assert 0 < steps < 1000 and min(probs) >= 0.5
    assert greedy_prompt(model, vocab, 4) == start
    # Stopped once each token reached the threshold: the policy still explores.
    obs, _ = model.policy.obs_to_tensor(np.full((1, 4), PAD, dtype=np.int64))
    with torch.no_grad():
        first = model.policy.get_distribution(obs).distribution.probs[0]
    assert float(first.max()) < 0.9


def test_a_start_prompt_as_long_as_the_prompt_length_needs_no_blank(tiny_llama):
    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    start = tuple(vocab[2:5])
    env = PromptVecEnv(LengthScorer(tiny_llama, start), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=3, examples_per_reward=1, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    assert with_start_prompt(vocab, start, 3) == vocab  # no blank added
    steps, probs = warm_start(model, start, vocab, 3, confidence=0.5)
    assert min(probs) >= 0.5 and greedy_prompt(model, vocab, 3) == start


def test_a_start_prompt_longer_than_the_prompt_length_is_refused_by_name(tiny_llama):
    from rlprompt.errors import RLPromptError

    with pytest.raises(RLPromptError, match=r"rl.init_prompt .* more than env.prompt_length \(2\)"):
        start_prompt_ids(_Objective(tiny_llama), tiny_llama, "All in all the movie was", 2)


@pytest.fixture
def tiny_task(tmp_path):
    write_task(tmp_path, "tiny", ROWS)
    return tmp_path


def test_a_warm_started_run_writes_the_start_prompt_first(tiny_task, capsys, tiny_gpt2):
    """The greedy prompt at the first evaluation is the start prompt, scoring on dev what the manual
    method gives that prompt."""
    register_model(tiny_gpt2)
    manual_dir = tiny_task / "manual"
    manual_dir.mkdir()
    write_task(manual_dir, "tiny", ROWS)
    train_cli(manual_dir, capsys, "model=tiny-gpt2", "method=manual", 'manual_prompts=["It was"]')
    (run,) = (manual_dir / "runs").iterdir()
    manual_dev = json.loads((run / "prompt.json").read_text())["metrics"]["candidates"]["It was"]

    run_dir, rows = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", "method=rl", "rl.init_prompt=It was", "total_timesteps=40",
        "evaluations=2", "env.num_envs=4", "env.prompt_length=4", "rl.batch_size=20", "vocab.size=50",
        "policy.adapter_hidden=16",
    )  # fmt: skip
    assert rows[0]["greedy_prompt"] == " It was"
    assert rows[0]["greedy_dev_score"] == pytest.approx(manual_dev)
    warm = json.loads((run_dir / "prompt.json").read_text())["metrics"]["warm_start"]
    assert warm["prompt"] == "It was" and min(warm["probabilities"]) >= 0.5


def test_rlprompts_top_3_mean_takes_the_first_three_of_more_kept_prompts():
    from rlprompt.methods.base import TopK

    assert TopK(0.6, 5, [0.9, 0.8, 0.7, 0.5, 0.1]).top_3_mean == pytest.approx(0.8)
    assert TopK(0.85, 2, [0.9, 0.8]).top_3_mean == pytest.approx(0.85)
    assert TopK().top_3_mean is None


def test_the_top_k_mean_is_the_mean_test_accuracy_of_the_best_dev_prompts(tiny_task, capsys, tiny_gpt2):
    """RLPrompt's top-3 figure: the k best distinct prompts seen on dev, each scored on test as the run
    scores (batch-calibrated here; each one's score in prompt.json), averaged; the chosen prompt is the
    one of them with the highest dev reward (rl.prompt_rule)."""
    from rlprompt.calibration import task_calibration
    from rlprompt.evaluation import evaluate_prompts, make_scorer
    from rlprompt.methods import MethodResult
    from rlprompt.tasks import load_task

    register_model(tiny_gpt2)
    run_dir, _ = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", "method=rl", "total_timesteps=80", "evaluations=4",
        "env.num_envs=4", "env.prompt_length=3", "rl.batch_size=20", "vocab.size=50",
        "policy.adapter_hidden=16",
    )  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    top = exported["metrics"]["top_k_prompts"]
    result = MethodResult.load(run_dir / "result.json")
    assert len(top) == result.top_k == 3 and len({tuple(p["token_ids"]) for p in top}) == 3
    chosen = max(top, key=lambda p: p["dev_reward"])
    assert chosen["token_ids"] == exported["token_ids"]
    assert [p["dev"] for p in top] == sorted([p["dev"] for p in top], reverse=True)
    task = load_task(str(tiny_task / "task.yaml"))
    scorer = make_scorer(tiny_gpt2, task, prompt_budget=8)  # the sentences are short: none is cut
    scored = evaluate_prompts(scorer, task.examples("test"), [tuple(p["token_ids"]) for p in top],
                              calibration=task_calibration("batch", task))  # fmt: skip
    assert result.test_top_k == pytest.approx(np.mean([r.metrics.accuracy for r in scored]))
    assert result.test_top_3 == exported["metrics"]["test_top_3_mean"] == pytest.approx(result.test_top_k)
    assert [p["test"] for p in top] == pytest.approx([r.metrics.accuracy for r in scored])
    assert scored[top.index(chosen)].metrics.accuracy == pytest.approx(result.test_score)
    # The ensemble of the 3: each test sentence's class is the argmax of their mean calibrated label
    # probabilities (log-softmax of each prompt's calibrated scores, averaged)
    labels = np.array([ex.label for ex in task.examples("test")])
    mean = np.mean([r.scores - np.log(np.exp(r.scores).sum(-1, keepdims=True)) for r in scored], axis=0)
    assert exported["metrics"]["test_ensemble_top_3"] == pytest.approx(np.mean(mean.argmax(-1) == labels))
    assert result.test_ensemble == exported["metrics"]["test_ensemble_top_3"]  # all 3: the report's column
    # The same three and their ensemble from the exported file, with the evaluation CLI
    from rlprompt.errors import run_cli
    from rlprompt.evaluate import main as evaluate_main

    argv = ["--prompt-file", str(run_dir / "prompt.json"), "--top-k", "3", "--ensemble", "--json"]
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, argv)
    rows = json.loads(capsys.readouterr().out)["results"]
    chosen_first = [chosen, *(p for p in top if p is not chosen)]
    assert done.value.code == 0 and [r["prompt_ids"] for r in rows[:3]] == [
        p["token_ids"] for p in chosen_first
    ]
    assert rows[3]["prompt"] == "ensemble of 3 prompts"
    assert rows[3]["accuracy"] == pytest.approx(exported["metrics"]["test_ensemble_top_3"])
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--prompt-file", str(run_dir / "prompt.json"), "--ensemble"])
    assert done.value.code == 2 and "--ensemble needs at least 2 prompts" in capsys.readouterr().err


def test_only_the_last_action_may_be_the_blank(tiny_llama):
    register_model(tiny_llama)
    words = tiny_llama.encode(" good bad movie")
    for vocab in ([BLANK, *words], [*words, PAD]):
        env = PromptVecEnv(LengthScorer(tiny_llama, ()), [Example("e", "x", 1)], vocab, num_envs=2,
                           prompt_length=2, examples_per_reward=1)  # fmt: skip
        with pytest.raises(ValueError, match="only the last may be the blank"):
            _ppo(env, vocab)


def test_a_policy_with_a_blank_saves_loads_and_polishes(tiny_llama, tmp_path):
    """policy.zip round trip with the blank's embedding; polishing a prompt shorter than the observation
    (blanks written) changes its tokens, not its length."""
    from rlprompt.methods.rl import polish_prompt

    register_model(tiny_llama)
    words = tiny_llama.encode(" good bad movie film really plot")
    vocab = [*words, BLANK]
    env = PromptVecEnv(LengthScorer(tiny_llama, (words[1], words[3])), [Example("e", "x", 1)], vocab,
                       num_envs=4, prompt_length=3, examples_per_reward=1, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    model.learn(4 * 3 * 4)
    model.save(tmp_path / "policy.zip")
    loaded = PPO.load(tmp_path / "policy.zip", env=env)
    assert torch.equal(loaded.policy.action_net.blank, model.policy.action_net.blank)
    probe = np.array([[PAD, PAD, PAD], [words[0], BLANK, PAD], [BLANK, BLANK, PAD]])
    assert (loaded.predict(probe, deterministic=True)[0] == model.predict(probe, deterministic=True)[0]).all()

    def reward(prompts):
        return np.array([sum(a == b for a, b in zip(p, (words[1], words[3]), strict=False)) for p in prompts],
                        dtype=float)  # fmt: skip

    accepted = polish_prompt(model, reward, (words[0], words[0]), vocab, rounds=3, top_k=7, length=3)
    assert accepted and accepted[-1] == (words[1], words[3])
    assert all(len(p) == 2 for p in accepted)


def test_sql_warm_start_moves_the_target_network_too(tiny_llama, tmp_path):
    from rlprompt.sql import SQL

    register_model(tiny_llama)
    words = tiny_llama.encode(" good bad movie film")
    vocab = [*words, BLANK]
    env = PromptVecEnv(LengthScorer(tiny_llama, ()), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=3, examples_per_reward=1, seed=0)  # fmt: skip
    kwargs = {"backbone": "tiny-llama", "action_token_ids": vocab, "adapter_hidden": 16}
    model = SQL(TokenPolicy, env, learning_rate=1e-2, polyak=1e-3, top_k=0, seed=0, policy_kwargs=kwargs)
    warm_start(model, (words[2],), vocab, 3, confidence=0.5)
    for online, target in ((model.policy.action_net, model.target_head),
                           (model.policy.mlp_extractor, model.target_extractor)):  # fmt: skip
        for a, b in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(a, b)
    assert greedy_prompt(model, vocab, 3) == (words[2],)


def test_a_settled_policy_restarts_from_the_best_training_prompt(tiny_llama):
    """rl.restart_window: due once fewer than restart_new_fraction of the window's prompts were new; the
    restart puts back the initial weights, clears the optimizer and clones the best training prompt."""
    from rlprompt.methods.rl import RLConfig, _Restarts

    register_model(tiny_llama)
    vocab = tiny_llama.encode(" good bad movie film really plot acting story")
    env = PromptVecEnv(LengthScorer(tiny_llama, ()), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=3, examples_per_reward=1, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    restarts = _Restarts(RLConfig(restart_window=3, restart_new_fraction=0.5), model)
    model.learn(4 * 3 * 6)  # trained: weights and Adam state away from the start
    assert model.policy.optimizer.state
    a, b, c, d = [(vocab[i], vocab[j], vocab[k]) for i, j, k in ((0, 1, 2), (3, 4, 5), (6, 7, 0), (1, 1, 1))]
    restarts.observe([a, b, c, a], [1.0, 5.0, 2.0, 1.0])  # 3 new of 4
    restarts.observe([b, b, b, b], [5.0] * 4)
    assert not restarts.due  # the window is not full yet
    restarts.observe([d, b, b, b], [0.0, 5.0, 5.0, 5.0])  # 4 new of 12: under half
    assert restarts.due and restarts.best == (5.0, b)
    assert greedy_prompt(model, vocab, 3) != b

    restarts.apply(model, vocab, 3, step=72)
    assert not restarts.due and restarts.steps == [72] and not restarts.new
    assert not model.policy.optimizer.state
    assert greedy_prompt(model, vocab, 3) == b
    initial = restarts.initial
    for name, value in model.policy.state_dict().items():  # only cloning moved it from the initial weights
        if "value" in name:
            assert torch.equal(value, initial[name]), name
    obs, _ = model.policy.obs_to_tensor(np.full((1, 3), PAD, dtype=np.int64))
    with torch.no_grad():
        assert float(model.policy.get_distribution(obs).distribution.probs.max()) < 0.9  # still exploring
    # Settled again on known prompts: due again; new prompts in the window keep it from being due.
    for _ in range(3):
        restarts.observe([b, b, b, b], [5.0] * 4)
    assert restarts.due
    restarts.observe([(vocab[i],) * 3 for i in (2, 3, 4, 5)], [0.0] * 4)
    assert restarts.due  # 4 new of 12
    restarts.observe([(vocab[6],) * 3, (vocab[7],) * 3, (vocab[0], vocab[2], vocab[4]), c], [0.0] * 4)
    assert not restarts.due  # 7 new of 12


def test_restarts_refuse_sql_and_a_negative_window():
    from rlprompt.methods.rl import RLConfig

    with pytest.raises(ValueError, match=r"'rl.restart_window' \(10\) applies to ppo and a2c, not sql: add "
                       r"--set rl.restart_window=0$"):  # fmt: skip
        RLConfig(algo="sql", restart_window=10)
    # Both PPO-only settings (as configs/quickstart.yaml has them) are named in one message, with the fix.
    both = (r"'rl.restart_window' \(10\) and 'rl.imitate_top' \(16\) apply to ppo and a2c, not sql: add "
            r"--set rl.restart_window=0 --set rl.imitate_top=0$")  # fmt: skip
    with pytest.raises(ValueError, match=both):
        RLConfig(algo="sql", restart_window=10, imitate_top=16)
    with pytest.raises(ValueError, match="'rl.restart_window' must be 0"):
        RLConfig(restart_window=-1)
    with pytest.raises(ValueError, match="'rl.restart_new_fraction' must be between 0 and 1"):
        RLConfig(restart_window=10, restart_new_fraction=1.5)


def test_imitation_raises_the_elite_prompts_likelihood_with_the_policys_optimizer(tiny_llama):
    """rl.imitate_top: a few steps on the elite prompts' negative log-likelihood make them likelier, a
    shorter elite prompt is imitated with its blank, and the steps go through PPO's own optimizer."""
    from rlprompt.methods.rl import _action_logprobs, _teacher_forced, imitate

    register_model(tiny_llama)
    words = tiny_llama.encode(" good bad movie film really plot acting story")
    vocab = [*words, BLANK]
    env = PromptVecEnv(LengthScorer(tiny_llama, ()), [Example("e", "x", 1)], vocab, num_envs=4,
                       prompt_length=3, examples_per_reward=1, seed=0)  # fmt: skip
    model = _ppo(env, vocab)
    elite = [(words[0], words[1], words[2]), (words[0], words[3])]  # the second writes a blank last
    obs, targets = _teacher_forced(model.policy, elite, vocab, 3)
    assert targets.tolist() == [0, 1, 2, 0, 3, len(vocab) - 1]
    with torch.no_grad():
        before = _action_logprobs(model.policy, obs, targets)
    assert not model.policy.optimizer.state
    first = imitate(model, elite, vocab, 3, steps=1)
    last = imitate(model, elite, vocab, 3, steps=20)
    with torch.no_grad():
        after = _action_logprobs(model.policy, obs, targets)
    assert model.policy.optimizer.state  # Adam's moments: the policy's optimizer took the steps
    assert last < first
    assert float(after.mean()) > float(before.mean()) + 0.5
    # Both elite prompts start with words[0]: imitation makes it the greedy first token.
    assert greedy_prompt(model, vocab, 3)[0] == words[0]


def test_imitation_refuses_sql_and_bad_sizes():
    from rlprompt.methods.rl import RLConfig

    with pytest.raises(ValueError, match=r"'rl.imitate_top' \(8\) applies to ppo and a2c, not sql"):
        RLConfig(algo="sql", imitate_top=8)
    with pytest.raises(ValueError, match="'rl.imitate_top' must be 0"):
        RLConfig(imitate_top=-1)
    with pytest.raises(ValueError, match="'rl.imitate_steps' at least 1"):
        RLConfig(imitate_top=8, imitate_steps=0)


def test_crossover_children_mix_two_elite_prompts_position_by_position():
    """rl.imitate_crossover: each child takes each position's token from one of two distinct parents (a
    shorter parent's missing position from the longer one, so no token moves), is as long as one of them,
    the same generator state draws the same children, and fewer than two parents give none."""
    from rlprompt.methods.rl import RLConfig, crossover_children

    parents = [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    children = crossover_children(parents, 200, np.random.default_rng(0))
    assert len(children) == 200
    assert children == crossover_children(parents, 200, np.random.default_rng(0))
    for child in children:
        assert len(child) in (2, 4)
        for i, token in enumerate(child):  # one parent's token at i
            assert token in {p[i] for p in parents if i < len(p)}
    assert {len(c) for c in children} == {2, 4}
    short = [c for c in children if len(c) == 2 and c[0] in (1, 5)]  # a 4-token parent's and (9, 10)'s
    assert any(c[1] == 10 for c in short) and any(c[1] != 10 for c in short)
    full = [c for c in children if len(c) == 4 and all(t in range(1, 9) for t in c)]
    assert any(set(c) & {1, 2, 3, 4} and set(c) & {5, 6, 7, 8} for c in full)  # real mixtures
    assert all(c[i] in (i + 1, i + 5) for c in full for i in range(4))
    assert crossover_children([(1, 2)], 5, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="'rl.imitate_crossover' must be 0 \\(off\\), or more with"):
        RLConfig(imitate_crossover=4)
    with pytest.raises(ValueError, match="'rl.imitate_crossover' must be 0"):
        RLConfig(imitate_top=8, imitate_crossover=-1)


def test_mean_batch_rewards_ranks_a_prompt_by_its_mean_over_distinct_batches():
    """rl.elite_by mean: a prompt's rank is the mean of its rewards over the distinct training batches it
    was scored on; a batch seen again (the same inputs) keeps its best reward, not a second vote."""
    from rlprompt.methods.rl import RLConfig, mean_batch_rewards

    store: dict = {}
    a, b = (1, 2), (3, 4)
    assert mean_batch_rewards(store, [a, b], [1.0, 5.0], b"batch1").tolist() == [1.0, 5.0]
    assert mean_batch_rewards(store, [a], [3.0], b"batch2").tolist() == [2.0]
    # batch1 again, a's reward higher there: a's batch1 reward is the higher one, and batch1 still counts once
    assert mean_batch_rewards(store, [a, b], [1.5, 4.0], b"batch1").tolist() == [2.25, 5.0]
    assert store == {a: {b"batch1": 1.5, b"batch2": 3.0}, b: {b"batch1": 5.0}}
    # max (as shipped) would rank a prompt written on many batches by its luckiest one
    lucky = mean_batch_rewards(store, [(5,)] * 3, [0.0, 9.0, 0.0], b"x")  # one batch: its best, 9
    assert lucky.tolist() == [0.0, 9.0, 9.0]
    assert mean_batch_rewards(store, [(5,)], [0.0], b"y").tolist() == [4.5]
    with pytest.raises(ValueError, match="'rl.elite_by' must be max or mean, not 'median'"):
        RLConfig(elite_by="median")
