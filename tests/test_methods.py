"""The baselines: the differentiable Scorer path, each method's training, PEFT exports, forgetting."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from rlprompt.backends.hf import Scorer
from rlprompt.errors import run_cli
from rlprompt.evaluate import main as evaluate_main
from rlprompt.methods import MethodResult
from rlprompt.models import register_model
from rlprompt.perplexity import heldout_sentences, perplexity
from rlprompt.tasks import Example
from rlprompt.templates import Template, in_context_template
from tests.conftest import train_cli, write_task

ROWS = [
    ("a gorgeous , witty , seductive movie .", 1),
    ("the film is strictly routine .", 0),
    ("a charming and often affecting journey .", 1),
    ("bad .", 0),
    ("an utterly incompetent , overlong mess .", 0),
    ("a masterpiece of quiet grace .", 1),
    ("dull , lifeless and far too long .", 0),
    ("warm , funny and wise .", 1),
]


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_gpt2_eager", "tiny_llama", "tiny_bert"])
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_differentiable_scores_equal_cached_scores(model, reuse_prefix, request, examples):
    lm = request.getfixturevalue(model)
    template = "{sentence} {prompt}" if lm.kind == "causal" else "{sentence} {prompt} <mask> ."
    scorer = Scorer(lm, template, ["bad", "good"], prompt_budget=8)
    ids = scorer.prompt_ids(" It was really")
    cached = scorer.score([ids], examples)[0]
    soft = lm.model.get_input_embeddings()(torch.tensor(ids)).detach()
    as_embeddings = scorer.evaluate_logprobs(examples, soft, reuse_prefix=reuse_prefix, batch_size=2)
    np.testing.assert_allclose(as_embeddings, cached, atol=2e-4)
    with torch.no_grad():
        as_ids = scorer.label_logprobs(examples, prompt_ids=ids, reuse_prefix=reuse_prefix).numpy()
    np.testing.assert_allclose(as_ids, cached, atol=2e-4)


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_gpt2_eager", "tiny_llama", "tiny_bert"])
def test_soft_prompts_scored_together_equal_one_at_a_time(model, request, examples):
    # BBT scores a generation in one call (packed behind each sentence's cached prefix on causal LMs);
    # a small token budget splits the candidates over several rows and batches.
    lm = request.getfixturevalue(model)
    template = "{sentence} {prompt} It was" if lm.kind == "causal" else "{sentence} {prompt} <mask> ."
    scorer = Scorer(lm, template, ["bad", "good"], prompt_budget=8, batch_tokens=64, prefix_group=3)
    assert scorer.encoder.encode_example(examples[0].text).tail  # tokens after the prompt, too
    torch.manual_seed(0)
    softs = torch.randn(7, 3, lm.model.config.hidden_size)  # far apart: each prompt gives its own scores
    together = scorer.evaluate_soft_prompts(examples, softs)
    assert together.shape == (7, len(examples), 2)
    one_at_a_time = np.stack([scorer.evaluate_logprobs(examples, s, reuse_prefix=False) for s in softs])
    np.testing.assert_allclose(together, one_at_a_time, atol=2e-4)
    # The prompts matter, so no packed row scored another's prompt (a tiny random BERT's mask barely
    # notices a prompt; its path is the one-at-a-time loop anyway).
    assert np.abs(together[0] - together[1]).max() > (1e-2 if lm.kind == "causal" else 1e-4)


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_gradients_reach_the_soft_prompt_and_only_it(tiny_llama, examples, reuse_prefix):
    scorer = Scorer(tiny_llama, "{sentence} {prompt}", ["bad", "good"], prompt_budget=8)
    soft = torch.nn.Parameter(torch.randn(3, tiny_llama.model.config.hidden_size) * 0.1)
    lp = scorer.label_logprobs(examples, prompt_embeds=soft, reuse_prefix=reuse_prefix)
    torch.nn.functional.cross_entropy(lp, torch.tensor([ex.label for ex in examples])).backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_llama.model.parameters())


@pytest.mark.parametrize("template", ["{sentence} {prompt} <mask> .", "<mask> : {prompt} {sentence}"])
def test_masked_soft_prompt_reads_the_label_at_the_shifted_mask(tiny_bert, examples, template):
    scorer = Scorer(tiny_bert, template, ["bad", "good"], prompt_budget=8)
    n = 4
    soft = torch.randn(n, tiny_bert.model.config.hidden_size)
    encoded = [scorer.encoder.encode_example(ex.text) for ex in examples]
    inputs, mask, label_pos = scorer.embedded_inputs(encoded, soft)
    mask_embedding = tiny_bert.model.get_input_embeddings()(torch.tensor(tiny_bert.mask_token_id))
    for i, enc in enumerate(encoded):
        assert torch.equal(inputs[i, label_pos[i]], mask_embedding)  # the label is read at the mask
        assert torch.equal(inputs[i, len(enc.head) : len(enc.head) + n], soft)  # the prompt at its slot
        assert int(mask[i].sum()) == len(enc.head) + n + len(enc.tail)
    # A mask after the prompt moves with its length; one before it does not.
    _, _, without = scorer.embedded_inputs(encoded, soft[:0])
    shift = 0 if template.startswith("<mask>") else n
    assert torch.equal(label_pos, without + shift)


def test_perplexity_matches_the_models_own_loss(tiny_llama):
    sentence = "the film is strictly routine ."
    ids = [tiny_llama.start_id, *tiny_llama.encode(sentence)]
    with torch.no_grad():
        loss = tiny_llama.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert perplexity(tiny_llama, [sentence]) == pytest.approx(float(torch.exp(loss)), rel=1e-4)
    soft = torch.randn(2, tiny_llama.model.config.hidden_size)
    assert perplexity(tiny_llama, [sentence], soft) != pytest.approx(perplexity(tiny_llama, [sentence]))
    assert len(heldout_sentences(200)) == 200


def test_pseudo_perplexity_of_a_masked_lm_is_finite(tiny_bert):
    value = perplexity(tiny_bert, ["a gorgeous , witty movie .", "bad ."])
    assert 1 < value < 10 * tiny_bert.tokenizer.vocab_size


def test_in_context_template_is_balanced_and_seeded(examples):
    train = [Example(f"x/{i}", s, y) for i, (s, y) in enumerate(ROWS)]
    text = in_context_template("{sentence} {prompt}", "causal", train, ["bad", "good"], "It was", 4, "\n", 0)
    demos = text.split("\n")[:-1]
    assert len(demos) == 4 and text.endswith("\n{sentence} {prompt}")
    assert (
        sum(d.endswith("It was good") for d in demos) == 2
        and sum(d.endswith("It was bad") for d in demos) == 2
    )
    again = in_context_template("{sentence} {prompt}", "causal", train, ["bad", "good"], "It was", 4, "\n", 0)
    other = in_context_template("{sentence} {prompt}", "causal", train, ["bad", "good"], "It was", 4, "\n", 1)
    assert text == again and text != other


def test_rl_with_demonstrations_learns_and_tests_the_prompt_after_the_in_context_examples(
    tiny_task, capsys, tiny_gpt2
):
    """task.demonstrations: the in_context method's demonstrations for the run's seed start the template
    RL trains, chooses and tests with; the exported prompt carries it, and the reported test accuracy is
    the exported prompt's under it, not under the plain template."""
    import yaml

    from rlprompt.calibration import task_calibration
    from rlprompt.evaluation import evaluate_prompts, make_scorer
    from rlprompt.tasks import load_task
    from rlprompt.templates import draw_demonstrations

    register_model(tiny_gpt2)
    run_dir, rows = train_cli(
        tiny_task, capsys, "model=tiny-gpt2", "method=rl", "seed=1", "task.demonstrations=2", "ensemble=1",
        "total_timesteps=80", "evaluations=2", "env.num_envs=4", "env.prompt_length=3", "rl.batch_size=20",
        "vocab.size=50", "policy.adapter_hidden=16",
    )  # fmt: skip
    exported = json.loads((run_dir / "prompt.json").read_text())
    task = load_task(str(tiny_task / "task.yaml"))
    template = in_context_template(
        task.template_for("causal"), "causal", task.examples("train"), task.verbalizers, task.manual_prompt,
        2, "\n", 1,
    )  # fmt: skip
    assert exported["template"] == Template.parse(template, "causal").text and len(rows) == 3
    # config.yaml repeats the run: the template written out, the demonstrations left out of training
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]
    shown = [ex.uid for ex in draw_demonstrations(task.examples("train"), 2, 1)]
    assert recorded["template"] == template and recorded["exclude_train"] == shown
    assert recorded["demonstrations"] == 0
    test, ids = task.examples("test"), tuple(exported["token_ids"])
    calibration = task_calibration("batch", task)
    with_demos = make_scorer(tiny_gpt2, task, template, prompt_budget=8)
    (scored,) = evaluate_prompts(with_demos, test, [ids], calibration=calibration)
    assert scored.metrics.accuracy == pytest.approx(MethodResult.load(run_dir / "result.json").test_score)
    (plain,) = evaluate_prompts(
        make_scorer(tiny_gpt2, task, prompt_budget=8), test, [ids], calibration=calibration
    )
    assert np.abs(scored.raw_scores - plain.raw_scores).max() > 1e-3


def test_demonstrations_give_each_seed_its_own_and_make_manual_the_in_context_method(
    tiny_task, tiny_gpt2, capsys
):
    """In a grid, each seed's runs read that seed's demonstrations (recorded in its config.yaml, so the run
    repeats from it), and the manual prompt behind them is exactly the in_context method on that seed."""
    import yaml

    from rlprompt.tasks import load_task

    register_model(tiny_gpt2)

    root, _ = train_cli(tiny_task, capsys, "model=tiny-gpt2", "methods=[manual]", "seeds=[0, 1]",
                        "task.demonstrations=2")  # fmt: skip
    shutil.move(root, tiny_task / "with_demonstrations")
    plain, _ = train_cli(tiny_task, capsys, "model=tiny-gpt2", "methods=[in_context]", "seeds=[0, 1]",
                         "in_context.k=2")  # fmt: skip
    task = load_task(str(tiny_task / "task.yaml"))
    for seed in (0, 1):
        run = tiny_task / "with_demonstrations" / f"manual__s{seed}"
        recorded = yaml.safe_load((run / "config.yaml").read_text())["task"]
        template = in_context_template(task.template_for("causal"), "causal", task.examples("train"),
                                       task.verbalizers, task.manual_prompt, 2, "\n", seed)  # fmt: skip
        assert recorded["template"] == template and recorded["demonstrations"] == 0
        manual = MethodResult.load(run / "result.json")
        in_context = MethodResult.load(plain / f"in_context__s{seed}" / "result.json")
        assert manual.test_score == pytest.approx(in_context.test_score)
        assert manual.dev_score == pytest.approx(in_context.dev_score)
    templates = [yaml.safe_load((tiny_task / "with_demonstrations" / f"manual__s{s}" / "config.yaml")
                 .read_text())["task"]["template"] for s in (0, 1)]  # fmt: skip
    assert templates[0] != templates[1]


def test_the_runs_of_a_seed_share_its_demonstrations_and_test_scorer(
    tiny_task, tiny_gpt2, capsys, monkeypatch
):
    """Behind demonstrations each seed has its own template and test scorer, made once for all the seed's
    runs in a process (so the test sentences' prefixes are computed once), not once per run."""
    import rlprompt.kinds.classification as classification

    register_model(tiny_gpt2)

    calls, real = [], classification.for_seed

    def counted(config, task, lm, seed, test_scorer):
        calls.append(seed)
        return real(config, task, lm, seed, test_scorer)

    monkeypatch.setattr(classification, "for_seed", counted)
    train_cli(tiny_task, capsys, "model=tiny-gpt2", "methods=[manual, soft_prompt]", "seeds=[0, 1]",
              "task.demonstrations=2", "soft_prompt.steps=2", "evaluations=1")  # fmt: skip
    assert calls == [0, 0, 1]  # the check on loading, then once per seed for its two runs


def test_demonstrations_are_left_out_of_training_and_the_recorded_config_repeats_the_run(
    tiny_task, capsys, tiny_llama
):
    """No method trains on an input whose answer the template shows: a seed's demonstrations join
    task.exclude_train in its config.yaml, which repeats the run exactly; the same template with them
    trained on is another run."""
    import yaml

    from rlprompt.config import load_train_config
    from rlprompt.evaluation import make_scorer
    from rlprompt.kinds.classification import ClassificationObjective, for_seed
    from rlprompt.tasks import load_task
    from rlprompt.templates import draw_demonstrations
    from rlprompt.train import main

    register_model(tiny_llama)
    settings = ["model=tiny-llama", "lora.steps=8", "lora.batch_size=4", "lora.learning_rate=0.02",
                "evaluations=2", "methods=[lora, manual]", "seeds=[0]", "task.demonstrations=2"]  # fmt: skip
    root, _ = train_cli(tiny_task, capsys, *settings)
    task = load_task(str(tiny_task / "task.yaml"))
    shown = [ex.uid for ex in draw_demonstrations(task.examples("train"), 2, 0)]
    recorded_file = root / "lora__s0" / "config.yaml"
    recorded = yaml.safe_load(recorded_file.read_text())["task"]
    assert recorded["exclude_train"] == shown and recorded["demonstrations"] == 0

    def rerun(name: str, *settings: str):
        argv = ["--quiet", "--config", str(recorded_file), "--set", f"output_dir={tiny_task / name}"]
        for setting in settings:
            argv += ["--set", setting]
        with pytest.raises(SystemExit) as done:
            run_cli(main, argv)
        assert done.value.code == 0, capsys.readouterr().err
        (run,) = (tiny_task / name).iterdir()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return MethodResult.load(run / "result.json"), [r["train_loss"] for r in rows[1:]]

    first = MethodResult.load(root / "lora__s0" / "result.json")
    lines = (root / "lora__s0" / "metrics.jsonl").read_text().splitlines()
    first_losses = [json.loads(line)["train_loss"] for line in lines[1:]]
    again, again_losses = rerun("again")
    assert again_losses == pytest.approx(first_losses, rel=1e-4)
    assert (again.dev_score, again.test_score) == pytest.approx((first.dev_score, first.test_score))
    _, with_shown = rerun("trained_on_them", "task.exclude_train=[]")
    assert with_shown != pytest.approx(first_losses, rel=1e-4)
    # RL's reward, search and BBT read the objective's training examples: the same ones.
    seed_config, _ = for_seed(load_train_config(str(root / "config.yaml")), task, tiny_llama, 0, None)
    assert seed_config.task.exclude_train == shown
    scorer = make_scorer(tiny_llama, task, seed_config.task.template, prompt_budget=8)
    objective = ClassificationObjective(scorer, task, seed_config)
    kept = [ex.uid for ex in task.examples("train") if ex.uid not in shown]
    assert [ex.uid for ex in objective.train] == kept and len(kept) == len(task.examples("train")) - 2


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_gpt2_eager", "tiny_llama"])
def test_a_shared_template_start_is_computed_once_with_the_same_scores(model, request, examples, monkeypatch):
    # In-context demonstrations precede every sentence: their keys/values are computed once and each
    # example continues from them. Scores: as if each head ran whole; tokens: the demonstrations once.
    import rlprompt.backends.hf as hf

    lm = request.getfixturevalue(model)
    train = [Example(f"x/{i}", s, y) for i, (s, y) in enumerate(ROWS)]
    template = in_context_template(
        "{sentence} {prompt}", "causal", train, ["bad", "good"], "It was", 2, "\n", 0
    )
    prompts = [" It was", " Overall"]
    shared = Scorer(lm, template, ["bad", "good"], prompt_budget=8, batch_tokens=256)
    heads = [shared.encoder.encode_example(ex.text).head for ex in examples]
    lead = len(os.path.commonprefix(heads))
    assert lead >= len(lm.encode(template.split("\n")[0])) + 2  # at least the first demonstration
    together = shared.score(prompts, examples)
    tokens = shared.stats.tokens_processed
    soft = lm.model.get_input_embeddings()(torch.tensor(shared.prompt_ids(prompts[0]))).detach()
    soft_scores = shared.evaluate_logprobs(examples, soft)
    # Soft prompts packed behind the shared start, in two calls whose heads differ: the second reuses
    # the kept start (cut to what both calls share) and computes only its own examples' rest.
    softs = torch.randn(3, 2, lm.model.config.hidden_size)
    split = Scorer(lm, template, ["bad", "good"], prompt_budget=8, batch_tokens=256)
    parts = [split.evaluate_soft_prompts(examples[:2], softs)]
    kept = split._shared
    parts.append(split.evaluate_soft_prompts(examples[2:], softs))
    assert split._shared is kept and len(kept[0]) >= lead  # computed once, reused by the second call
    monkeypatch.setattr(hf, "SHARED_HEAD_MIN", 10**9)
    whole = Scorer(lm, template, ["bad", "good"], prompt_budget=8, batch_tokens=256)
    np.testing.assert_allclose(together, whole.score(prompts, examples), atol=2e-4)
    np.testing.assert_allclose(soft_scores, together[0], atol=2e-4)
    assert whole.stats.tokens_processed - tokens == (len(examples) - 1) * lead
    expected = np.stack([whole.evaluate_logprobs(examples, s, reuse_prefix=False) for s in softs])
    np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, atol=2e-4)


@pytest.fixture
def tiny_task(tmp_path):
    write_task(tmp_path, "tiny", ROWS, verbalizers="{0: bad, 1: good}")
    return tmp_path


def _train(tiny_task, capsys, *settings: str, expect: int = 0) -> int:
    train_cli(tiny_task, capsys, *settings, expect=expect)
    return expect


@pytest.mark.parametrize(
    ("model", "method", "lr"),
    [
        # Soft prompts need a real model: a random tiny one barely depends on a shared prefix.
        ("smollm2-135m", "soft_prompt", 0.03),
        ("bert-tiny-splade", "soft_prompt", 0.1),
        ("tiny-llama", "lora", 0.01),
        ("bert-tiny-splade", "lora", 0.01),
        ("tiny-llama", "ia3", 0.3),
        ("smollm2-135m", "prefix_tuning", 0.03),
        ("bert-tiny-splade", "ia3", 0.3),
        ("tiny-gpt2", "full_finetune", 3e-3),
    ],
)
def test_each_gradient_method_lowers_its_training_loss(
    model, method, lr, tiny_task, capsys, tiny_llama, tiny_gpt2, smol, bert
):
    for lm in (tiny_llama, tiny_gpt2):
        register_model(lm)
    shared = (tiny_llama, tiny_gpt2, smol, bert)
    weights = [p.detach().clone() for lm in shared for p in lm.model.parameters()]
    _train(tiny_task, capsys, f"model={model}", f"method={method}", f"{method}.steps=24",
           f"{method}.batch_size=8", f"{method}.learning_rate={lr}", "evaluations=3")  # fmt: skip
    (run_dir,) = (tiny_task / "runs").iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 8, 16, 24]
    losses = [r["train_loss"] for r in records[1:]]
    assert losses[-1] < losses[0] * 0.9, losses
    result = MethodResult.load(run_dir / "result.json")
    assert result.method == method and result.steps == 24 and result.trainable_params > 0
    assert result.perplexity_before is not None and result.perplexity_after is not None
    assert result.dev_score == max(r["dev_score"] for r in records)
    # The shared frozen models are untouched: methods that train weights work on a copy.
    after = [p.detach() for lm in shared for p in lm.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights, after, strict=True))
    assert all(not p.requires_grad for lm in shared for p in lm.model.parameters())


@pytest.mark.parametrize("rule", ["dev_accuracy", "dev_accuracy_then_loss", "dev_loss"])
def test_the_checkpoint_rule_decides_which_evaluation_is_kept(rule, tiny_task, capsys, tiny_llama):
    register_model(tiny_llama)
    _train(tiny_task, capsys, "model=tiny-llama", "method=lora", "lora.steps=12", "lora.batch_size=4",
           "lora.learning_rate=0.02", "evaluations=6", f"checkpoint_rule={rule}")  # fmt: skip
    (run_dir,) = (tiny_task / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = {"dev_accuracy": lambda r: (r["dev_score"],),
            "dev_accuracy_then_loss": lambda r: (r["dev_score"], -r["dev_loss"]),
            "dev_loss": lambda r: (-r["dev_loss"],)}  # fmt: skip
    # Each rule's choice, worked out here from the logged evaluations (the first of equals wins).
    chosen = {name: max(range(len(rows)), key=lambda i, k=key: (k(rows[i]), -i))
              for name, key in keys.items()}  # fmt: skip
    assert len({rows[i]["step"] for i in chosen.values()}) > 1, rows  # the rules disagree on this run
    kept = rows[chosen[rule]]
    result = MethodResult.load(run_dir / "result.json")
    meta = json.loads((run_dir / result.artifact / "rlprompt_adapter.json").read_text())
    assert meta["metrics"]["best_step"] == kept["step"]
    assert result.dev_score == kept["dev_score"]


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("tiny-llama", "soft_prompt"),
        ("tiny-bert", "soft_prompt"),
        ("tiny-llama", "lora"),
        ("tiny-llama", "ia3"),
        ("tiny-bert", "ia3"),
        ("tiny-llama", "prefix_tuning"),
        ("tiny-gpt2", "full_finetune"),
    ],
)
def test_exports_load_back_and_evaluate_to_the_same_accuracy(
    model, method, tiny_task, capsys, tiny_llama, tiny_gpt2, tiny_bert
):
    from peft import PeftModel

    for lm in (tiny_llama, tiny_gpt2, tiny_bert):
        register_model(lm)
    _train(tiny_task, capsys, f"model={model}", f"method={method}", f"{method}.steps=6", "evaluations=2",
           f"{method}.learning_rate=0.01")  # fmt: skip
    (run_dir,) = (tiny_task / "runs").iterdir()
    result = MethodResult.load(run_dir / "result.json")
    artifact = run_dir / result.artifact
    lm = {"tiny-llama": tiny_llama, "tiny-gpt2": tiny_gpt2, "tiny-bert": tiny_bert}[model]
    if method == "soft_prompt":  # PEFT's own loader reads it
        loaded = PeftModel.from_pretrained(lm.model, artifact)
        assert loaded.prompt_encoder["default"].embedding.weight.shape[0] == 5
    elif method in ("lora", "ia3", "prefix_tuning"):
        config = json.loads((artifact / "adapter_config.json").read_text())
        assert config["peft_type"] == method.upper()
        PeftModel.from_pretrained(__import__("copy").deepcopy(lm.model), artifact)
    else:
        assert (artifact / "config.json").exists() and (artifact / "tokenizer_config.json").exists()
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--adapter", str(artifact), "--json"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    (evaluated,) = json.loads(out)["results"]
    assert evaluated["accuracy"] == pytest.approx(result.test_score)


def test_manual_method_keeps_the_best_prompt_on_dev(tiny_task, capsys, tiny_gpt2):
    register_model(tiny_gpt2)
    prompts = ["It was", "All in all", "Overall the movie was"]
    _train(tiny_task, capsys, "model=tiny-gpt2", "method=manual", f"manual_prompts={json.dumps(prompts)}")
    (run_dir,) = (tiny_task / "runs").iterdir()
    exported = json.loads((run_dir / "prompt.json").read_text())
    candidates = exported["metrics"]["candidates"]
    assert set(candidates) == set(prompts)
    assert candidates[exported["text"]] == max(candidates.values())
    assert MethodResult.load(run_dir / "result.json").trainable_params == 0


def test_adapters_of_several_seeds_evaluate_as_one_ensemble(tiny_task, capsys, tiny_llama):
    """--ensemble over --adapter weights (one method's seeds, say): each adapter's row as alone, and a last
    row whose labels are the argmax of their mean calibrated label log-probabilities."""
    from rlprompt.calibration import task_calibration
    from rlprompt.evaluation import ensemble_scores, evaluate_adapter
    from rlprompt.tasks import load_task

    register_model(tiny_llama)
    _train(tiny_task, capsys, "model=tiny-llama", "method=lora", "seeds=[0, 1]", "lora.steps=6",
           "evaluations=2", "lora.learning_rate=0.05")  # fmt: skip
    (root,) = (tiny_task / "runs").iterdir()
    artifacts = [str(root / f"lora__s{seed}" / "lora") for seed in (0, 1)]
    argv = [arg for path in artifacts for arg in ("--adapter", path)] + ["--calibration", "batch", "--json"]
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, [*argv, "--ensemble"])
    assert done.value.code == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["prompt"] for r in rows][2:] == ["ensemble of 2 adapters"]
    task = load_task(str(tiny_task / "task.yaml"))
    examples = task.examples("test")
    alone = [evaluate_adapter(path, tiny_llama, task, examples, calibration=task_calibration("batch", task))
             for path in artifacts]  # fmt: skip
    assert [r["accuracy"] for r in rows[:2]] == pytest.approx([r.metrics.accuracy for r in alone])
    labels = np.array([ex.label for ex in examples])
    mean = ensemble_scores([r.scores for r in alone])
    assert rows[2]["accuracy"] == pytest.approx(float((mean.argmax(-1) == labels).mean()))
    # One adapter is no ensemble: one line, exit 2.
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--adapter", artifacts[0], "--ensemble"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--ensemble needs at least 2 adapters" in err and "Traceback" not in err


def test_adapter_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(evaluate_main, ["--adapter", str(tmp_path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "rlprompt_adapter.json" in err and "Traceback" not in err


def test_an_interrupted_comparison_stops_and_reports_what_finished(tiny_task, capsys, tiny_gpt2, monkeypatch):
    import rlprompt.methods as methods

    register_model(tiny_gpt2)
    real = methods.run_method

    def interrupt_in_context(name, ctx):
        result = real(name, ctx)
        result.interrupted = name == "in_context"  # as if Ctrl-C had stopped its training
        result.save(ctx.run_dir)
        return result

    monkeypatch.setattr(methods, "run_method", interrupt_in_context)
    # Exit code 130: interrupted, with the --resume command to continue
    _train(tiny_task, capsys, "model=tiny-gpt2", "methods=[manual, in_context]", "seeds=[0, 1]", expect=130)
    (root,) = (tiny_task / "runs").iterdir()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["in_context__s0", "manual__s0"]
    report = (root / "report.md").read_text()
    assert "| manual | 0 |" in report and "| in_context | 0 |" in report and "(interrupted)" in report


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_prefix_initialised_from_words_reads_as_those_words_written_first(model, request):
    """Prefix tuning's default start: the keys and values the LM computes for the manual prompt, so the
    untrained prefix reads the input exactly as the model reads the prompt followed by the input."""
    import copy

    from peft import PrefixTuningConfig, TaskType, get_peft_model

    from rlprompt.methods.tuning import initial_prefix

    lm = request.getfixturevalue(model)
    words = lm.tokenizer("It was", add_special_tokens=False)["input_ids"]
    text = lm.tokenizer(" a warm and funny film", add_special_tokens=False)["input_ids"]
    n = len(words)
    wrapper = get_peft_model(copy.deepcopy(lm.model), PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n))  # fmt: skip
    with torch.no_grad():
        wrapper.prompt_encoder["default"].embedding.weight.copy_(initial_prefix(lm, words, n))
        with_prefix = wrapper(input_ids=torch.tensor([text])).logits[0]
        written = lm.model(input_ids=torch.tensor([words + text])).logits[0, n:]
    torch.testing.assert_close(with_prefix, written, atol=1e-4, rtol=1e-4)
    # Repeating the words fills a longer prefix; a shorter one keeps the first tokens.
    assert initial_prefix(lm, words, 2 * n + 1).shape[0] == 2 * n + 1


def test_a_failed_run_is_recorded_and_the_grid_goes_on_then_resume_reruns_only_it(
    tiny_task, capsys, tiny_gpt2, monkeypatch
):
    """A run that raises mid-grid writes failure.json, the other runs finish and the report lists the failure
    (exit 1); once the fault is gone, --resume keeps the finished runs and runs the failed one."""
    import rlprompt.methods as methods

    register_model(tiny_gpt2)
    real = methods.run_method

    def broken_in_context_seed_0(name, ctx):
        if name == "in_context" and ctx.seed == 0:
            raise RuntimeError("demonstrations file vanished")
        return real(name, ctx)

    monkeypatch.setattr(methods, "run_method", broken_in_context_seed_0)
    train_cli(tiny_task, capsys, "model=tiny-gpt2", "methods=[manual, in_context]", "seeds=[0, 1]", expect=1)
    (root,) = (tiny_task / "runs").iterdir()
    failure = json.loads((root / "in_context__s0" / "failure.json").read_text())
    assert (
        failure["error"] == "RuntimeError: demonstrations file vanished"
        and "Traceback" in failure["traceback"]
    )
    assert not (root / "in_context__s0" / "result.json").exists()
    assert all((root / f"{m}__s{s}" / "result.json").exists() for m, s in
               [("manual", 0), ("manual", 1), ("in_context", 1)])  # fmt: skip
    report = (root / "report.md").read_text()
    assert "## Failed runs" in report and "demonstrations file vanished" in report
    assert "| in_context | 1 |" in report and "| in_context | 0 |" not in report.split("## Failed runs")[0]
    kept = (root / "manual__s0" / "result.json").stat().st_mtime_ns

    monkeypatch.setattr(methods, "run_method", real)  # the fault is fixed
    from rlprompt.train import main as train_main

    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--quiet", "--resume", str(root)])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "manual seed 0: finished before, kept" in out
    assert "in_context seed 0: starting (no checkpoint to continue from)" in out
    assert (root / "in_context__s0" / "result.json").exists() and not (
        root / "in_context__s0" / "failure.json"
    ).exists()
    assert (root / "manual__s0" / "result.json").stat().st_mtime_ns == kept
    assert "## Failed runs" not in (root / "report.md").read_text()


def test_a_run_that_refuses_a_setting_says_a_resume_cannot_change_it(
    tiny_task, capsys, tiny_gpt2, monkeypatch
):
    """A crash is fixed and resumed; a run that refused one of its settings (a user error only the run can
    detect) cannot be, since a resume keeps the settings: the console says so, and failure.json records which
    kind of failure it was."""
    import rlprompt.methods as methods
    from rlprompt.errors import RLPromptError
    from rlprompt.train import main as train_main

    register_model(tiny_gpt2)
    real = methods.run_method

    def refusing(name, ctx):
        if name == "in_context":
            raise RLPromptError("in_context.k: 2 demonstrations do not fit the model's 64 positions")
        if ctx.seed == 1:
            raise RuntimeError("out of memory")
        return real(name, ctx)

    monkeypatch.setattr(methods, "run_method", refusing)
    settings = [f"task.name={tiny_task / 'task.yaml'}", f"output_dir={tiny_task / 'runs'}",
                "heldout_sentences=4", "methods=[manual, in_context]", "seeds=[0, 1]"]  # fmt: skip
    argv = ["--quiet", *(arg for setting in settings for arg in ("--set", setting))]
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    err = capsys.readouterr().err
    assert done.value.code == 1
    (root,) = (tiny_task / "runs").iterdir()
    refused = {(m, s): json.loads((root / f"{m}__s{s}" / "failure.json").read_text())["refused"]
               for m, s in [("in_context", 0), ("in_context", 1), ("manual", 1)]}  # fmt: skip
    assert refused == {("in_context", 0): True, ("in_context", 1): True, ("manual", 1): False}
    from rlprompt.checkpoint import NonFiniteError
    from rlprompt.runs import record_failure

    # A NaN stop is not a refused setting: its own message says how to resume with a new learning rate.
    assert record_failure(tiny_task / "nan", "rl", 0, NonFiniteError("NaN loss"))["refused"] is False
    assert f"--resume {root}" in err and "a resume keeps each run's settings" in err

    monkeypatch.setattr(methods, "run_method", lambda name, ctx: (_ for _ in ()).throw(RuntimeError("oom")))
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--quiet", "--resume", str(root)])
    err = capsys.readouterr().err
    assert done.value.code == 1 and f"--resume {root}" in err and "a resume keeps" not in err
