"""``python -m rlprompt.train`` end to end on a tiny model, the exported prompt, and config errors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from stable_baselines3 import A2C, PPO

from rlprompt import load_prompt
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.evaluate import main as evaluate_main
from rlprompt.models import register_model
from rlprompt.sql import SQL
from rlprompt.train import main as train_main
from tests.conftest import write_task

ROWS = [("a joy to watch .", 1), ("a dull , lifeless mess .", 0), ("warm and funny .", 1), ("tedious .", 0),
        ("one of the best films of the year .", 1), ("i hated every minute .", 0)]  # fmt: skip


@pytest.fixture
def tiny_task(tmp_path):
    return write_task(tmp_path, "tiny", ROWS)


def run(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sql"])
def test_train_smoke_run_writes_a_complete_run_directory(algo, tiny_gpt2, tiny_task, tmp_path, capsys):
    register_model(tiny_gpt2)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: tiny-gpt2\ntask: {{name: {tiny_task}}}\nvocab: {{size: 40}}\n", encoding="utf-8"
    )
    argv = ["--config", str(config), "--quiet", "--set", f"output_dir={tmp_path / 'runs'}",
            "--set", "total_timesteps=160", "--set", "evaluations=2", "--set", "env.num_envs=4",
            "--set", "env.examples_per_reward=4", "--set", "rl.batch_size=20",
            "--set", "policy.adapter_hidden=32",
            "--set", f"rl.algo={algo}"]  # fmt: skip
    code, out, err = run(train_main, argv, capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("tiny__rl__tiny-gpt2__s0__")
    assert "test accuracy" in out and "manual 'It was'" in out and "empty prompt" in out
    assert "test accuracy, raw -> batch-calibrated:" in out  # the reference rows, both ways
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "prompt.json", "summary.txt", "policy.zip"} <= files
    # The checkpoint holds the small trainable part and names the backbone; it does not copy it.
    policy_class = {"ppo": PPO, "a2c": A2C, "sql": SQL}[algo]
    reloaded = policy_class.load(run_dir / "policy.zip")
    assert reloaded.policy.backbone == "tiny-gpt2"
    assert (run_dir / "policy.zip").stat().st_size < 200_000
    assert list(run_dir.rglob("events.out.tfevents.*")), "no TensorBoard events"
    resolved = (run_dir / "config.yaml").read_text()
    assert "total_timesteps: 160" in resolved and "num_envs: 4" in resolved
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 84, 160]
    assert all(0 <= r["best_dev_score"] <= 1 for r in records)

    # The exported prompt round-trips and evaluates through the evaluate CLI.
    prompt = load_prompt(run_dir / "prompt.json")
    assert prompt.model == "tiny-gpt2" and prompt.model_kind == "causal" and prompt.task == "tiny"
    assert len(prompt.token_ids) == 5 and prompt.text == tiny_gpt2.decode(prompt.token_ids)
    assert prompt.verbalizers == ["terrible", "great"] and prompt.method == "rl" and prompt.seed == 0
    assert set(prompt.metrics) >= {"dev_accuracy", "test_accuracy", "manual_test_accuracy", "steps"}
    # A causal input ends where the label word would come; a masked one holds the model's mask token.
    assert prompt.fill("great fun .") == f"great fun . {prompt.text.strip()}"
    assert prompt.fill("great fun .", kind="masked") == f"great fun . {prompt.text.strip()} <mask> ."
    assert prompt.fill("fun .", kind="masked", label="[MASK]") == f"fun . {prompt.text.strip()} [MASK] ."
    code, out, _err = run(
        evaluate_main,
        ["--model", "tiny-gpt2", "--prompt-file", str(run_dir / "prompt.json"), "--json"],
        capsys,
    )
    assert code == 0, _err
    payload = json.loads(out)
    assert payload["task"] == "tiny" and payload["results"][0]["prompt_ids"] == prompt.token_ids
    assert payload["results"][0]["accuracy"] == pytest.approx(prompt.metrics["test_accuracy"])
    # From Python, on new text: the labels the run's test accuracy counted, calibrated as it was.
    from rlprompt.tasks import load_task

    test = load_task(prompt.task_source).examples("test")
    labels = prompt.classify([ex.text for ex in test])
    names = load_task(prompt.task_source).class_names
    right = sum(label == names[ex.label] for label, ex in zip(labels, test, strict=True))
    assert right / len(test) == pytest.approx(prompt.metrics["test_accuracy"])
    # The run's batch prior is in the file (one row of one value a class), so classify needs no task there;
    # re-estimated (a file without it) it is the same.
    assert prompt.calibration == "batch" and len(prompt.priors) == 1 and len(prompt.priors[0]) == 2
    unrecorded = type(prompt)(**(asdict(prompt) | {"priors": []}))
    assert unrecorded.classify([ex.text for ex in test]) == labels
    # Without the task's file, a batch prior cannot be re-estimated: said in one line, with what can be;
    # contextual calibration needs no task inputs.
    moved = Path(prompt.task_source).rename(tmp_path / "moved.yaml")
    with pytest.raises(
        RLPromptError, match=r"re-estimates the prompt's batch prior .* calibration='contextual'"
    ):
        unrecorded.classify(["great fun ."])
    assert unrecorded.classify(["great fun ."], calibration="contextual")[0] in names
    with pytest.raises(RLPromptError, match="calibration must be one of"):
        prompt.classify(["great fun ."], calibration="bogus")
    moved.rename(prompt.task_source)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "rl.learning_rat=1"], "--set rl.learning_rat: unknown key 'rl.learning_rat'; did you mean 'rl.learning_rate'?"),  # noqa: E501
        (["--set", "rl.algo=dqn"], "'rl.algo' must be one of 'ppo', 'a2c', 'sql', got 'dqn'"),
        (["--set", "total_timesteps=0"], "'total_timesteps' must be at least 1, got 0"),
        (["--set", "env.num_envs=many"], "'env.num_envs' must be an integer, got 'many'"),
        (["--config", "missing.yaml"], "missing.yaml: file not found"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line_and_exit_2(argv, message, capsys):
    code, _, err = run(train_main, argv, capsys)
    assert code == 2
    assert err.strip() == f"error: --set: {message}" or err.strip().endswith(message), err


def test_unknown_config_file_keys_name_the_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("modle: smollm2-135m\n", encoding="utf-8")
    code, _, err = run(train_main, ["--config", str(config)], capsys)
    assert code == 2 and err.strip() == f"error: {config}: unknown key 'modle'; did you mean 'model'?"


def test_prompt_file_errors(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"text": "x"}', encoding="utf-8")
    with pytest.raises(RLPromptError, match="not an rlprompt prompt file"):
        load_prompt(bad)
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(RLPromptError, match=r"p\.json: not valid JSON"):
        load_prompt(bad)


def _a_prompt_file() -> dict:
    from dataclasses import asdict

    from rlprompt.export import LearnedPrompt

    return asdict(LearnedPrompt(
        text=" It was", token_ids=[1027, 436], model="smollm2-135m", model_kind="causal",
        template="{sentence} {prompt}", verbalizers=["terrible", "great"], task="sst-2",
        method="rl", seed=0, calibration="batch",
        ensemble=[{"text": " It was", "token_ids": [1027, 436]}, {"text": " So", "token_ids": [1406]}],
        metrics={"top_k_prompts": [{"text": " It was", "token_ids": [1027, 436], "dev": 0.5}]},
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("token_ids", "abc", "'token_ids' must be a list, got 'abc'"),
        ("token_ids", [1, -2], "'token_ids' must be token ids (0 or more), got [1, -2]"),
        ("model", None, "'model' must be a string, got None"),
        ("seed", "first", "'seed' must be an integer, got 'first'"),
        ("ensemble", "notalist", "'ensemble' must be a list, got 'notalist'"),
        ("ensemble", [{"text": "a"}], "'ensemble[0]' must hold a 'text' and its 'token_ids'"),
        ("metrics", None, "'metrics' must be a mapping, got None"),
        ("metrics", {"top_k_prompts": [{"text": "a", "token_ids": ["x"]}]}, "'metrics.top_k_prompts[0]'"),
        ("calibration", "bogus", "'calibration' must be one of none, batch, contextual, domain"),
        ("text", "MISSING", "incomplete prompt file (no 'text')"),
        # Fields that must agree with each other (an edited file would score something else than it says).
        ("token_ids", [], "'token_ids' is empty, but 'text' is ' It was'"),
        ("ensemble", [{"text": " So", "token_ids": [1406]}], "'ensemble[0]' must be the chosen prompt"),
        ("verbalizers", ["great", "great"], "'verbalizers' must be distinct, non-empty words"),
        ("model_kind", "seq2seq", "'model_kind' must be 'causal' or 'masked', got 'seq2seq'"),
        ("priors", [[-0.5, -1.0]], "'priors' must hold 2 row(s) of 2 log-probs"),
    ],
)  # fmt: skip
def test_a_malformed_prompt_file_is_one_line_naming_the_file_and_the_field(tmp_path, field, value, message):
    """Every field a tool reads is checked when the file loads, so evaluate, transfer and the API answer a
    hand-edited or foreign file with one line instead of failing deep inside."""
    data = _a_prompt_file()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(data), encoding="utf-8")
    assert load_prompt(good).ensemble == data["ensemble"]  # the file as written loads
    if value == "MISSING":
        del data[field]
    else:
        data[field] = value
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RLPromptError) as err:
        load_prompt(bad)
    assert str(err.value).startswith(f"{bad}: ") and message in str(err.value), err.value


def test_evaluate_refuses_ids_outside_the_model_and_a_top_k_without_a_prompt_file(
    tiny_gpt2, tmp_path, capsys
):
    register_model(tiny_gpt2)
    data = {**_a_prompt_file(), "model": "tiny-gpt2", "token_ids": [10**9], "ensemble": []}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    code, _, err = run(
        evaluate_main, ["--prompt-file", str(path), "--model", "tiny-gpt2", "--limit", "2"], capsys
    )
    size = len(tiny_gpt2.tokenizer)
    assert (
        code == 2
        and err.strip() == f"error: prompt token id {10**9} is not a token of tiny-gpt2 ({size} tokens)"
    )
    code, _, err = run(evaluate_main, ["--prompt", "It was", "--top-k", "2"], capsys)
    assert code == 2
    assert err.strip() == "error: --top-k reads a run's best prompts from its prompt file: give --prompt-file"
    code, _, err = run(evaluate_main, ["--limit", "abc"], capsys)  # argparse's own: one line, exit 2
    assert code == 2 and err.strip().splitlines() == [
        "error: argument --limit: invalid int value: 'abc' "
        "(python -m rlprompt.evaluate --help lists the options)"
    ]


def test_a_reward_query_budget_stops_training_early(tiny_gpt2, tiny_task, tmp_path, capsys):
    register_model(tiny_gpt2)
    argv = ["--quiet", "--set", "model=tiny-gpt2", "--set", f"task.name={tiny_task}",
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", "total_timesteps=4000",
            "--set", "evaluations=4", "--set", "env.num_envs=4", "--set", "env.examples_per_reward=4",
            "--set", "rl.batch_size=20", "--set", "policy.adapter_hidden=32",
            "--set", "max_reward_queries=200"]  # fmt: skip
    code, out, err = run(train_main, argv, capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = load_prompt(run_dir / "prompt.json").metrics
    assert metrics["steps"] < 4000
    # It stops at the first prompt batch that ends past the budget (each batch: 4 prompts x 4 examples,
    # plus a dev evaluation now and then), long before the 4,000 steps would have spent.
    assert 200 <= metrics["reward_queries"] < 400


def test_the_policy_may_use_another_tokenizer_than_the_task_model(tiny_bert, tiny_llama, tmp_path, capsys):
    """RLPrompt's setup: a causal policy (GPT-style tokens) writes prompts for a masked task model (BERT
    word pieces); the task model reads the decoded text. prompt.json keeps both token sequences."""
    from rlprompt.evaluate import main as evaluate_main
    from rlprompt.models import register_model
    from tests.conftest import write_task

    register_model(tiny_bert)
    register_model(tiny_llama)
    rows = [("a joy to watch .", 1), ("a dull mess .", 0), ("warm and funny .", 1), ("tedious .", 0)]
    task = write_task(tmp_path, "two", rows)
    argv = ["--quiet", "--run-dir", str(tmp_path / "run"), "--set", "model=tiny-bert",
            "--set", "policy.backbone=tiny-llama", "--set", f"task.name={task}",
            "--set", "total_timesteps=80", "--set", "evaluations=2", "--set", "env.num_envs=4",
            "--set", "env.examples_per_reward=4", "--set", "rl.batch_size=20", "--set", "vocab.size=30",
            "--set", "policy.adapter_hidden=16"]  # fmt: skip
    code, _, err = run(train_main, argv, capsys)
    assert code == 0, err
    prompt = load_prompt(tmp_path / "run" / "prompt.json")
    assert prompt.version == 2 and prompt.model == "tiny-bert" and prompt.policy_model == "tiny-llama"
    assert prompt.text == tiny_llama.decode(prompt.policy_token_ids), "the text is what the policy wrote"
    assert prompt.token_ids == tiny_bert.encode(prompt.text.strip()), "... as the task model tokenizes it"
    assert prompt.token_ids != prompt.policy_token_ids
    argv = ["--prompt-file", str(tmp_path / "run" / "prompt.json"), "--json"]
    code, out, err = run(evaluate_main, argv, capsys)
    assert code == 0, err
    # The same token ids, scored in another batch: equal up to a near-tie on one of the 4 examples.
    accuracy = json.loads(out)["results"][0]["accuracy"]
    assert accuracy == pytest.approx(prompt.metrics["test_accuracy"], abs=0.25 + 1e-9)


def test_version_1_prompt_files_still_load(tmp_path):
    v1 = {"format": "rlprompt.prompt", "version": 1, "text": " great", "token_ids": [1], "model": "m",
          "model_kind": "causal", "template": "{sentence} {prompt}", "verbalizers": ["bad", "good"],
          "task": "t", "method": "rl", "seed": 0}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(v1))
    prompt = load_prompt(tmp_path / "p.json")
    assert prompt.calibration == "none" and prompt.policy_model is None and prompt.version == 1


def test_dry_run_checks_everything_prints_the_plan_and_writes_nothing(tiny_gpt2, tmp_path, capsys):
    register_model(tiny_gpt2)
    task = write_task(tmp_path, "dry", [("a joy .", 1), ("a mess .", 0)])
    out_dir = tmp_path / "runs"
    base = ["--set", "model=tiny-gpt2", "--set", f"task={task}", "--set", f"output_dir={out_dir}",
            "--set", "methods=[rl, manual, soft_prompt]", "--dry-run"]  # fmt: skip
    code, out, err = run(train_main, base, capsys)
    assert code == 0, err
    assert out.startswith("plan: ~") and "pairs/s warm" in out
    assert "(tiny-gpt2 on cpu, float32; scoring " in out, "where the task LM runs: auto resolved"
    for method in ("rl", "manual", "soft_prompt"):
        assert f"\n  {method}: ~" in out
    assert "(at most 6,610)" in out, "rl's bound: 3,200 prompts x 2 examples + 21 evaluations x 5 x 2"
    assert "dry run: every check passed; nothing was written" in out and not out_dir.exists()
    code, _, err = run(train_main, [*base, "--set", "task.template=It was {sentence}"], capsys)
    assert code == 2 and "must contain {prompt} exactly once" in err, "the same checks as a run"
    # With demonstrations the plan is priced on the inputs the runs will read, which are longer
    code, with_demos, err = run(train_main, [*base, "--set", "task.demonstrations=1"], capsys)
    assert code == 0, err
    per_query = [_plan_tokens(plan, "rl") / _plan_queries(plan, "rl") for plan in (out, with_demos)]
    assert per_query[1] > per_query[0] and not out_dir.exists()
    # ... and left out of training: two demonstrations would leave the two-example task nothing to train on
    code, _, err = run(train_main, [*base, "--set", "task.demonstrations=2"], capsys)
    assert code == 2 and "task.demonstrations: 2 leaves none of the 2 training examples of dry" in err


def test_the_plan_probes_speed_on_the_threads_the_runs_will_use(tiny_gpt2, tmp_path, capsys, monkeypatch):
    """threads_per_run applies to the plan's speed probe too (a probe on every core, beside another
    process starting, priced runs several times too long), and the thread count is restored afterwards."""
    import torch

    import rlprompt.plan as plan

    register_model(tiny_gpt2)
    task = write_task(tmp_path, "probe", [("a joy .", 1), ("a mess .", 0)])
    probed_with, real_probe = [], plan.probe_speed

    def probe(*args, **kwargs):
        probed_with.append(torch.get_num_threads())
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(plan, "probe_speed", probe)
    before = torch.get_num_threads()
    base = ["--set", "model=tiny-gpt2", "--set", f"task={task}", "--set", "methods=[rl, manual]", "--dry-run"]
    for threads in (1, None):
        extra = ["--set", f"threads_per_run={threads}"] if threads else []
        code, out, err = run(train_main, [*base, *extra], capsys)
        assert code == 0 and "plan: ~" in out, err
        assert probed_with[-1] == (threads or before) and torch.get_num_threads() == before


def _plan_queries(plan: str, method: str) -> float:
    import re

    return float(re.search(rf"\n  {method}: ~([\d,]+) reward queries", plan).group(1).replace(",", ""))


def _plan_tokens(plan: str, method: str) -> float:
    import re

    number, unit = re.search(rf"\n  {method}: ~[^\n]*?, ~([\d,.]+)([kM]?) LM tokens", plan).groups()
    return float(number.replace(",", "")) * {"": 1, "k": 1e3, "M": 1e6}[unit]


def test_a_grid_over_data_splits_runs_each_split_and_reports_them_together(tiny_gpt2, tmp_path, capsys):
    """RLPrompt's protocol as a config: task.seeds runs the grid on each few-shot split (the built-in
    SST-2 here) in its own directory, and one report covers them all; --resume keeps what finished."""
    import json

    register_model(tiny_gpt2)
    root = tmp_path / "protocol"
    # one demonstration: four SST-2 ones fill tiny-gpt2's 64 positions, which is refused
    argv = ["--quiet", "--set", "model=tiny-gpt2", "--set", "task.seeds=[16-13, 16-21]", "--set",
            "methods=[manual, in_context]", "--set", "in_context.k=1", "--set", "seeds=[0]",
            "--run-dir", str(root)]  # fmt: skip
    code, out, err = run(train_main, argv, capsys)
    assert code == 0, err
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["split-16-13", "split-16-21"]
    results = sorted(root.glob("split-*/*/result.json"))
    assert [json.loads(f.read_text())["data_seed"] for f in results] == ["16-13", "16-13", "16-21", "16-21"]
    numbers = json.loads((root / "report.json").read_text())
    assert numbers["data_seeds"] == ["16-13", "16-21"] and numbers["methods"]["manual"]["test"]["n"] == 2
    # The manual prompt does not learn: the same raw test accuracy on both splits (calibrated, not: the
    # label prior comes from each split's unlabelled inputs).
    manual = [r["test_metrics"] for r in numbers["methods"]["manual"]["runs"]]
    assert manual[0]["accuracy_raw"] == pytest.approx(manual[1]["accuracy_raw"])
    assert manual[0]["accuracy_calibrated"] != manual[1]["accuracy_calibrated"]
    for split in ("16-13", "16-21"):
        assert f"seed: {split}" in (root / f"split-{split}" / "manual__s0" / "config.yaml").read_text()
    assert len(numbers["references"]) == 2 and numbers["references"][0]["test_raw"]["n"] == 2
    assert "| manual | 16-13 | 0 |" in (root / "report.md").read_text()
    stamp = results[0].stat().st_mtime_ns
    code, out, err = run(train_main, ["--quiet", "--resume", str(root)], capsys)
    assert code == 0, err
    assert results[0].stat().st_mtime_ns == stamp  # finished runs are kept


def test_the_plan_counts_data_splits_and_runs_at_a_time_on_ray(tiny_gpt2, tmp_path, capsys, monkeypatch):
    import torch

    from rlprompt.config import TrainConfig
    from rlprompt.plan import MethodPlan, Speed, format_plan

    plans = [MethodPlan("rl", 3, 1000, 2000, 5000, 600.0), MethodPlan("manual", 3, 32, 32, 100, 20.0)]
    speed = Speed(80.0, 140.0, 6.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the threads the speed was probed with
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # (a cluster's address would move the Ray grid there)
    local = TrainConfig()
    assert format_plan(plans, speed, local).startswith("plan: ~31.0 min in all on this machine (")
    ray = TrainConfig(executor="ray", threads_per_run=1)
    ray.ray.num_cpus = 8  # 8 runs of 1 thread at a time, each half as fast as on the probe's 2 threads
    assert format_plan(plans, speed, ray, splits=5).startswith(
        "plan: ~38.8 min in all on this machine, 8 run(s) at a time of 1 thread(s) each (Ray), 5 data splits"
    )
    cluster = TrainConfig(executor="ray", threads_per_run=1)
    cluster.ray.address = "10.0.0.5:6379"  # not "on this machine": the runs' sum, at this machine's speed
    on_cluster = (
        "plan: ~62.0 min in all summed over runs of 1 thread(s) each at this machine's speed (the Ray "
        "cluster 10.0.0.5:6379 may run them side by side, in less wall time) ("
    )
    assert format_plan(plans, speed, cluster).startswith(on_cluster)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # the cluster the grid would run on, as ray.address
    assert format_plan(plans, speed, TrainConfig(executor="ray", threads_per_run=1)).startswith(on_cluster)
    monkeypatch.undo()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a Ray instance started here
    register_model(tiny_gpt2)
    task = write_task(tmp_path, "dry", [("a joy .", 1), ("a mess .", 0)])
    argv = ["--set", "model=tiny-gpt2", "--set", f"task={task}", "--set", "methods=[manual, in_context]",
            "--set", "executor=ray", "--set", "threads_per_run=1", "--set", "ray.num_cpus=4",
            "--dry-run"]  # fmt: skip
    code, out, err = run(train_main, argv, capsys)
    assert code == 0, err
    assert "2 run(s) at a time of 1 thread(s) each (Ray)" in out  # no more at once than the grid has runs
    code, out, err = run(train_main, [*argv[:4], "--set", "method=manual", *argv[6:]], capsys)
    assert code == 0, err
    assert "(Ray)" not in out  # one run runs here, not on Ray


def test_data_splits_are_refused_for_a_task_with_one_set_of_splits(tmp_path, capsys):
    task = write_task(tmp_path, "mine", [("a joy .", 1), ("a mess .", 0)])
    argv = ["--set", f"task={task}", "--set", "task.seeds=[16-13, 16-21]", "--dry-run"]
    code, _, err = run(train_main, argv, capsys)
    assert code == 2 and "task.seeds: data splits are the built-in tasks' few-shot seeds" in err


def test_the_plan_prices_weight_training_at_whole_sequences_and_the_soft_prompt_at_cached_ones():
    """LoRA and the other weight or prefix methods compute every sequence whole (speed.full), for training,
    dev, test and the forgetting perplexity; the soft prompt reuses the frozen model's sentence prefixes
    (speed.cold) except in the perplexity, which reads whole held-out sentences."""
    from rlprompt.config import TrainConfig
    from rlprompt.plan import GRADIENT_FACTOR, Sizes, Speed, gradient_estimate

    config = TrainConfig(heldout_sentences=200)
    sizes = Sizes(train=32, dev=32, test=100, evaluations=17, test_prefix_seconds=0.0, test_pair_seconds=0.0)
    speed = Speed(cold=80.0, warm=140.0, tokens_per_pair=6.0, full=20.0)
    for method, rate in (
        ("lora", 20.0),
        ("prefix_tuning", 20.0),
        ("full_finetune", 20.0),
        ("soft_prompt", 80.0),
    ):
        section = getattr(config, method)
        examples = section.steps * section.batch_size
        expected = (examples * GRADIENT_FACTOR + 17 * 32 + 100) / rate + 200 / 20.0
        assert gradient_estimate(method, config, sizes, speed).seconds == pytest.approx(expected), method
    # The probe's whole-sequence pass runs only for a run that has such a method.
    from rlprompt.plan import needs_whole_speed

    assert not needs_whole_speed(TrainConfig(methods=["rl", "search", "bbt", "manual", "in_context"]))
    assert needs_whole_speed(TrainConfig(methods=["rl", "soft_prompt"]))
    # A backend without whole-sequence scoring (a server): the probe's cold speed stands in.
    no_full = Speed(cold=80.0, warm=140.0, tokens_per_pair=6.0)
    assert (
        gradient_estimate("lora", config, sizes, no_full).seconds
        < gradient_estimate("lora", config, sizes, speed).seconds
    )


def test_the_plan_prices_the_test_evaluation_at_one_prefix_an_example_and_every_reported_prompt():
    """rl and search score on test each reported top prompt (the ensemble's members among them) and the
    manual one behind each test sentence's prefix, computed once; the probe's cold speed minus its warm one
    (8 prompts an example) prices the prefix."""
    from rlprompt.config import TrainConfig
    from rlprompt.methods import rl, search
    from rlprompt.plan import Sizes, Speed

    speed = Speed(cold=40.0, warm=80.0, tokens_per_pair=6.0)
    sizes = Sizes(train=32, dev=32, test=1000, evaluations=5, test_prefix_seconds=8 / 40 - 8 / 80,
                  test_pair_seconds=1 / 80)  # fmt: skip
    assert sizes.test_seconds(4) == pytest.approx(1000 * (0.1 + 4 / 80))
    for module in (rl, search):
        base = module.estimate("rl", TrainConfig(top_k_report=3, ensemble=3), sizes, speed).seconds
        more = module.estimate("rl", TrainConfig(top_k_report=10, ensemble=5), sizes, speed).seconds
        assert more - base == pytest.approx(1000 * 7 / 80)  # 7 more reported prompts on 1,000 sentences
    # PPO runs whole rollouts (n_steps in each of num_envs): 400 steps of 5-token prompts in 32 envs are 480.
    config = TrainConfig(total_timesteps=400)
    config.env.num_envs, config.env.examples_per_reward, config.rl.n_steps = 32, 32, 5
    dev = 5 * (1 + config.candidates_per_eval) * 32
    assert rl.estimate("rl", config, sizes, speed).reward_queries_max == 480 // 5 * 32 + dev


def test_the_plan_sizes_training_without_the_excluded_examples_and_the_demonstrations(monkeypatch):
    """The plan prices a run on what its methods train on: the task's training examples less
    task.exclude_train (repeated ids counted once, as the task counts them) and each seed's demonstrations."""
    import rlprompt.plan as plan
    from rlprompt.config import TaskConfig, TrainConfig
    from rlprompt.tasks import load_task

    task = load_task("sst-2", seed="16-13")
    ids = [ex.uid for ex in task.examples("train")[:3]]
    config = TrainConfig(methods=["lora"], task=TaskConfig(name="sst-2", seed="16-13", demonstrations=2,
                                                          exclude_train=[*ids, ids[0]]))  # fmt: skip
    seen = []
    monkeypatch.setattr(plan, "gradient_estimate", lambda method, config, sizes, speed: seen.append(sizes)
                        or plan.Estimate(0, 0, 1.0))  # fmt: skip
    plan.plan_run(config, task, plan.Speed(cold=80.0, warm=140.0, tokens_per_pair=6.0, full=20.0))
    assert [s.train for s in seen] == [32 - 3 - 2] and seen[0].dev == 32


def test_a_missing_policy_backbone_fails_before_any_method_runs(tiny_gpt2, tiny_task, tmp_path, capsys):
    """A comparison whose RL runs last must not run the others first and then fail on policy.backbone."""
    register_model(tiny_gpt2)
    missing = tmp_path / "no-such-model"
    # (with executor: ray the driver checks that the name resolves, and loads nothing the workers load)
    for extra in (["--dry-run"], [], ["--set", "executor=ray"]):
        argv = ["--set", f"task.name={tiny_task}", "--set", "model=tiny-gpt2",
                "--set", "methods=[manual, rl]", "--set", f"policy.backbone={missing}",
                "--set", f"output_dir={tmp_path / 'runs'}", *extra]  # fmt: skip
        code, _, err = run(train_main, argv, capsys)
        assert code == 2 and str(missing) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written
