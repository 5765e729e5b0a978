"""Gradient baselines: soft-prompt tuning, LoRA and full fine-tuning, all on one loss and one loop.

The loss is the cross-entropy, over the task's classes, of the Scorer's label log-probs (the same numbers
the RL reward and every evaluation use). LoRA and full fine-tuning read the input through the template
with the task's manual prompt (prompt-based fine-tuning, as in LM-BFF); the soft prompt's virtual tokens
take the template's ``{prompt}`` slot, where the RL prompt goes, and start from the manual prompt's
embeddings (repeated to fill them, as PEFT's text init does). Methods that train weights work on a copy of
the task LM: the shared frozen model is never touched.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from rlprompt.calibration import calibrate, normalised, reference_method, task_calibration
from rlprompt.checkpoint import (
    StopAtOnce,
    check_finite,
    non_finite,
    overflowed,
    parameters_sum,
    restore_rng,
    save_checkpoint,
)
from rlprompt.compat import returned_cache
from rlprompt.errors import RLPromptError
from rlprompt.evaluation import make_scorer, prompt_budget, scored_result
from rlprompt.export import save_adapter
from rlprompt.methods.base import (
    EvalLog,
    MethodContext,
    MethodResult,
    classification_correct_of,
    classification_metrics_of,
    dev_accuracy,
    path_bytes,
)
from rlprompt.perplexity import heldout_sentences, perplexity
from rlprompt.scoring import ScorerStats
from rlprompt.settings import at_least_one, positive


@dataclass
class TuningConfig:
    """Gradient training of a baseline: the cross-entropy of the Scorer's label log-probs (classes only)."""

    section: ClassVar[str] = ""  # the config section (each method's subclass names its own)

    steps: int = 60  # optimizer steps
    batch_size: int = 16  # training examples per step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        at_least_one(self.section, steps=self.steps, batch_size=self.batch_size)
        positive(self.section, learning_rate=self.learning_rate)


@dataclass
class SoftPromptConfig(TuningConfig):
    """PEFT prompt tuning; the virtual tokens sit at the template's {prompt} slot, where RL's prompt goes."""

    section: ClassVar[str] = "soft_prompt"

    num_virtual_tokens: int = 5  # as many as the RL prompt has tokens
    init_text: str | None = None  # start from these words' embeddings; None: the task's manual prompt;
    # "" : embeddings of random vocabulary tokens
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_one(self.section, num_virtual_tokens=self.num_virtual_tokens)


@dataclass
class LoraSection(TuningConfig):
    """PEFT LoRA on the task LM (PEFT's default target modules for the architecture unless given)."""

    section: ClassVar[str] = "lora"

    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_one(self.section, r=self.r)


@dataclass
class PrefixTuningSection(TuningConfig):
    """PEFT prefix tuning (Li and Liang, 2021): learned keys and values before the input in every layer
    (causal models here), read with the template and the manual prompt, as LoRA is."""

    section: ClassVar[str] = "prefix_tuning"

    num_virtual_tokens: int = 5  # as many as the RL prompt has tokens
    init_text: str | None = None  # start from the keys and values the LM computes for these words (Li and
    # Liang's initialisation with real words' activations); None: the task's manual prompt; "": PEFT's random
    learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_one(self.section, num_virtual_tokens=self.num_virtual_tokens)


@dataclass
class IA3Section(TuningConfig):
    """PEFT IA3 (Liu et al., 2022): learned rescaling of keys, values and feed-forward activations, the
    adapter family's smallest member (PEFT's default modules for the architecture unless given)."""

    section: ClassVar[str] = "ia3"

    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None  # a subset of target_modules, scaled at their input
    learning_rate: float = 1e-2  # scales start at 1 and few steps are run: larger than LoRA's


@dataclass
class FinetuneConfig(TuningConfig):
    """Every weight of the task LM is trained."""

    section: ClassVar[str] = "full_finetune"

    learning_rate: float = 2e-5


def run_soft_prompt(ctx: MethodContext) -> MethodResult:
    return run_tuning("soft_prompt", ctx)


def run_lora(ctx: MethodContext) -> MethodResult:
    return run_tuning("lora", ctx)


def run_prefix_tuning(ctx: MethodContext) -> MethodResult:
    return run_tuning("prefix_tuning", ctx)


def run_ia3(ctx: MethodContext) -> MethodResult:
    return run_tuning("ia3", ctx)


def run_full_finetune(ctx: MethodContext) -> MethodResult:
    return run_tuning("full_finetune", ctx)


class Trainable:
    """What one gradient baseline trains, and how its scores are computed: ``adapted`` is the task LM as the
    run sees it (the frozen LM for a soft prompt, a copy with adapters or new weights otherwise), ``scorer``
    scores training batches, ``params`` are what the optimizer moves."""

    prompt_only = False  # the model's weights are not trained: it stays in eval mode
    checkpoints = True  # whether checkpoints are written as due (False: only on a stop request)

    def __init__(
        self, ctx: MethodContext, section, budget: int, stats: ScorerStats, rng: np.random.Generator
    ):
        self.ctx, self.section, self.budget, self.stats = ctx, section, budget, stats
        self.template = ctx.config.task.template

    def batch_logprobs(self, batch) -> torch.Tensor:
        return self.scorer.label_logprobs(batch, prompt_ids=self.manual_ids, reuse_prefix=False)

    def current_scorer(self):
        return self.scorer

    def score_on(self, scorer, inputs, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def snapshot(self):
        return {n: p.detach().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def restore(self, state) -> None:
        with torch.no_grad():
            for n, p in self.module.named_parameters():
                if n in state:
                    p.copy_(state[n])

    def test_scorer(self):
        return make_scorer(self.adapted, self.ctx.task, self.template, prompt_budget=self.budget)

    def perplexity_after(self, sentences) -> float:
        return perplexity(self.adapted, sentences)

    def export(self) -> dict:
        """``save_adapter``'s arguments for what was learned."""
        return {"wrapper": self.wrapper}

    def learned(self, trainable: int) -> str:
        return f"{trainable:,} weights"


class SoftPrompt(Trainable):
    """PEFT prompt tuning: virtual tokens at the template's {prompt} slot of the frozen LM."""

    prompt_only = True

    def __init__(self, ctx, section, budget, stats, rng):
        super().__init__(ctx, section, budget, stats, rng)
        lm = self.adapted = ctx.lm
        self.scorer = make_scorer(lm, ctx.task, self.template, prompt_budget=budget, stats=stats)
        init_text = ctx.manual_prompt if section.init_text is None else section.init_text
        self.soft = torch.nn.Parameter(
            initial_soft_prompt(lm, self.scorer, section.num_virtual_tokens, init_text, rng)
        )
        self.params = [self.soft]

    def batch_logprobs(self, batch):
        return self.scorer.label_logprobs(batch, prompt_embeds=self.soft)

    def score_on(self, scorer, inputs, progress=False):
        return scorer.evaluate_logprobs(inputs, self.soft, progress=progress)

    def snapshot(self):
        return self.soft.detach().clone()

    def restore(self, state):
        self.soft.data.copy_(state)

    def test_scorer(self):
        return self.ctx.test_scorer  # the frozen LM's, shared: its sentence prefixes are computed once

    def perplexity_after(self, sentences):
        return perplexity(self.adapted, sentences, soft_prompt=self.soft.detach())

    def export(self):
        return {"soft_prompt": self.soft.detach()}

    def learned(self, trainable):
        return f"{self.section.num_virtual_tokens} virtual tokens"


class PrefixTuning(Trainable):
    """PEFT prefix tuning: learned keys and values before the input in every layer (causal LMs), read with
    the template and the manual prompt. They sit outside the model's weights, which stay frozen (in a copy,
    since PEFT wraps the model it is given)."""

    prompt_only = True

    def __init__(self, ctx, section, budget, stats, rng):
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        super().__init__(ctx, section, budget, stats, rng)
        lm = ctx.lm
        if lm.kind != "causal":
            raise RLPromptError(f"prefix_tuning runs on causal models here; {lm.name} is a {lm.kind} model")
        self.wrapper = self.module = get_peft_model(copy.deepcopy(lm.model), PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=section.num_virtual_tokens))  # fmt: skip
        self.params = [p for p in self.wrapper.parameters() if p.requires_grad]
        self.adapted = dataclasses.replace(
            lm, name=f"{lm.name}+prefix_tuning", model=self.wrapper.get_base_model()
        )
        self.scorer = make_scorer(self.adapted, ctx.task, self.template, prompt_budget=budget, stats=stats,
                                  prefix_model=self.wrapper)  # fmt: skip
        init_text = ctx.manual_prompt if section.init_text is None else section.init_text
        if init_text:
            with torch.no_grad():
                self.wrapper.prompt_encoder["default"].embedding.weight.copy_(
                    initial_prefix(lm, self.scorer.prompt_ids(init_text), section.num_virtual_tokens)
                )
        embed = lm.model.get_input_embeddings()
        self.manual_ids = self.scorer.prompt_ids(ctx.manual_prompt)
        with torch.no_grad():
            ids = torch.tensor(list(self.manual_ids), dtype=torch.long, device=embed.weight.device)
            self.manual_embeds = embed(ids)

    def score_on(self, scorer, inputs, progress=False):
        return scorer.evaluate_logprobs(inputs, self.manual_embeds, reuse_prefix=False, progress=progress)

    def test_scorer(self):
        return make_scorer(self.adapted, self.ctx.task, self.template, prompt_budget=self.budget,
                           prefix_model=self.wrapper)  # fmt: skip

    def perplexity_after(self, sentences):
        # Through PEFT's own forward, which puts the learned prefix first.
        return perplexity(dataclasses.replace(self.adapted, model=self.wrapper), sentences)

    def learned(self, trainable):
        layers = getattr(self.ctx.lm.model.config, "num_hidden_layers", "?")
        return f"{self.section.num_virtual_tokens} virtual tokens x {layers} layers"


class Weights(Trainable):
    """Weights of a copy of the task LM: PEFT adapters (LoRA, IA3) or every weight (full fine-tuning),
    read with the template and the manual prompt."""

    def __init__(self, ctx, section, budget, stats, rng):
        super().__init__(ctx, section, budget, stats, rng)
        lm, name = ctx.lm, section.section
        model = copy.deepcopy(lm.model)
        if name in PEFT_ADAPTERS:
            from peft import get_peft_model

            self.wrapper = get_peft_model(model, _peft_config(name, section, lm.kind))
            model = self.wrapper.get_base_model()
        else:
            # Weights trained in half precision lose small updates: full fine-tuning trains an fp32 copy. A
            # checkpoint holds every weight four times over (the weights, the kept best, Adam's two moments):
            # it is written on a clean stop only, and a killed run restarts.
            self.wrapper = model = model.float()
            model.requires_grad_(True)
            self.checkpoints = False
        self.module = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.adapted = dataclasses.replace(lm, name=f"{lm.name}+{name}", model=model)
        self.scorer = make_scorer(self.adapted, ctx.task, self.template, prompt_budget=budget, stats=stats)
        self.manual_ids = self.scorer.prompt_ids(ctx.manual_prompt)

    def current_scorer(self):
        # The weights changed: a fresh scorer, so no prefix computed by older weights is reused.
        return make_scorer(
            self.adapted, self.ctx.task, self.template, prompt_budget=self.budget, stats=self.stats
        )

    def score_on(self, scorer, inputs, progress=False):
        return scorer.score([self.manual_ids], inputs, progress=progress)[0]


TRAINABLES = {"soft_prompt": SoftPrompt, "prefix_tuning": PrefixTuning, "lora": Weights, "ia3": Weights,
              "full_finetune": Weights}  # fmt: skip


def run_tuning(name: str, ctx: MethodContext) -> MethodResult:
    config, task, lm = ctx.config, ctx.task, ctx.lm
    section = getattr(config, name)
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    train, dev = ctx.train_examples, task.examples("dev")
    manual = ctx.manual_prompt
    stats = ScorerStats()  # every scorer of this run adds its tokens here
    budget = max(prompt_budget(lm, [manual]), getattr(section, "num_virtual_tokens", 0))
    trained = TRAINABLES[name](ctx, section, budget, stats, rng)
    params, adapted, scorer = trained.params, trained.adapted, trained.scorer
    current_scorer, score_on, snapshot, restore = (
        trained.current_scorer, trained.score_on, trained.snapshot, trained.restore)  # fmt: skip

    calibration = task_calibration(config.calibration, task)

    def dev_logprobs():
        """Dev log-probs of the current weights, calibrated as the run asks (prior from the unlabelled
        training and dev inputs, scored with the same weights)."""
        sc = current_scorer()
        logprobs = score_on(sc, dev)
        prior = None
        if calibration.active:
            prior = calibration.prior(lambda inputs: score_on(sc, inputs)[None], sc.lm, sc.accepts_input)
        return calibrate(logprobs[None], prior)[0]

    trainable = int(sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=section.learning_rate, weight_decay=section.weight_decay)
    labels_of = {ex.uid: ex.label for ex in train}
    eval_at = set(ctx.eval_steps(section.steps))
    resume = ctx.resume
    log = EvalLog(ctx.run_dir, section.steps, f"{name} s{ctx.seed}", ctx.progress,
                  resume["log"] if resume else None)  # fmt: skip
    keep = CHECKPOINT_RULES[config.checkpoint_rule]
    best_state, best_step, best_key, best_dev, losses = None, 0, None, -1.0, []
    order: list[int] = []
    first = last_checkpoint = last_eval = 0
    checkpoints = trained.checkpoints
    if resume:
        restore(resume["params"])
        optimizer.load_state_dict(resume["optimizer"])
        for group in optimizer.param_groups:  # --resume may set a new learning rate (after a NaN, say)
            group["lr"], group["weight_decay"] = section.learning_rate, section.weight_decay
        rng.bit_generator.state = resume["data_rng"]
        best_state, best_step = resume["best_state"], resume["best_step"]
        best_dev = resume.get("best_dev", resume["log"].get("best_score", -1.0))
        # A checkpoint written before checkpoint_rule holds no key: its kept state counts as the worst loss.
        best_key = tuple(resume.get("best_key") or keep(best_dev, float("inf")))
        losses, order = resume["losses"], resume["order"]
        stats.pairs_scored, stats.tokens_processed = resume["scorer_stats"]
        restore_rng(resume["rng"])
        first = last_checkpoint = last_eval = resume["step"]
    interrupted = False
    step = first
    hint = f"Lower {name}.learning_rate."
    try:
        for step in range(first, section.steps + 1):
            if step in eval_at and not (resume and step == first):  # a resumed step was evaluated
                adapted.model.train(False)
                scores = dev_logprobs()
                accuracy, dev_loss = dev_accuracy(scores, dev), dev_cross_entropy(scores, dev)
                loss_avg = float(np.mean(losses)) if losses else None
                log.record(step, accuracy, stats.tokens_processed, train_loss=loss_avg, dev_loss=dev_loss)
                key = keep(accuracy, dev_loss)
                if best_key is None or key > best_key:  # on a tie the earlier checkpoint stays
                    best_state, best_step, best_key, best_dev = snapshot(), step, key, accuracy
                losses.clear()
                last_eval = step
            # always after the last step: a run stopped during its test evaluation resumes there
            last = step == section.steps
            due = last or ctx.checkpoint_due(step, last_checkpoint, last_eval > last_checkpoint)
            # Full fine-tuning writes its (large) checkpoint only when a clean stop is asked for.
            if (checkpoints or ctx.stop.requested) and due and step != last_checkpoint:
                check_finite(
                    parameters_sum(params), f"the {name} weights", step, ctx.run_dir, last_checkpoint, hint
                )
                save_checkpoint(ctx.run_dir, {
                    "method": name, "step": step, "finished": last, "params": snapshot(),
                    "optimizer": optimizer.state_dict(),
                    "data_rng": rng.bit_generator.state, "best_state": best_state, "best_step": best_step,
                    "best_key": best_key, "best_dev": best_dev,
                    "losses": list(losses), "order": list(order), "log": log.state(step),
                    "scorer_stats": (stats.pairs_scored, stats.tokens_processed),
                })  # fmt: skip
                last_checkpoint = step
            if last:
                break
            if ctx.stop.requested:
                raise KeyboardInterrupt
            if len(order) < section.batch_size:  # epoch-wise shuffling, drawn from the run's seed
                order += list(rng.permutation(len(train)))
            batch = [train[i] for i in order[: section.batch_size]]
            del order[: section.batch_size]
            adapted.model.train(not trained.prompt_only)  # the frozen LM stays in eval mode
            logprobs = trained.batch_logprobs(batch)
            labels = torch.tensor([labels_of[ex.uid] for ex in batch], device=logprobs.device)
            loss = torch.nn.functional.cross_entropy(logprobs, labels)
            check_finite(loss, "the training loss", step, ctx.run_dir, last_checkpoint, hint)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, section.max_grad_norm)
            try:
                optimizer.step()
            except RuntimeError as err:
                if not overflowed(err):
                    raise
                raise non_finite(f"the {name} update", step, ctx.run_dir, last_checkpoint, hint) from None
            losses.append(loss.item())
    except StopAtOnce:
        raise
    except KeyboardInterrupt:
        interrupted = True
        print(f"\nstopped at step {step}: evaluating the best checkpoint so far", flush=True)
    finally:
        log.close()
        adapted.model.train(False)
    train_seconds = log.elapsed
    lm_tokens = int(stats.tokens_processed)
    restore(best_state)

    test = task.examples("test")
    test_scorer = trained.test_scorer()
    reference = task_calibration(reference_method(config.calibration), task)
    result = scored_result(
        name, lambda inputs, progress=False: score_on(test_scorer, inputs, progress)[None], test, reference,
        test_scorer, ctx.progress,
    )  # fmt: skip
    metrics = result.scored(calibration.active)

    sentences, before = perplexity_before(ctx)
    after = trained.perplexity_after(sentences)

    artifact = save_adapter(
        name, ctx.run_dir, lm=lm, scorer=scorer, task=task, config=config, seed=ctx.seed,
        manual_prompt=manual, **trained.export(),
        metrics={"dev_accuracy": best_dev, "test_accuracy": metrics.accuracy,
                 "test_accuracy_raw": result.raw.accuracy,
                 "test_accuracy_calibrated": result.metrics.accuracy, "calibrated_with": reference.method,
                 "best_step": best_step},
        calibration=config.calibration,
    )  # fmt: skip
    learned = trained.learned(trainable)
    del optimizer
    return MethodResult(
        method=name, seed=ctx.seed, model=lm.name, task=task.name, dev_score=best_dev,
        test_metrics=classification_metrics_of(result, calibration.active),
        test_correct=classification_correct_of(result, calibration.active), steps=int(step),
        train_seconds=round(train_seconds, 1), lm_tokens=lm_tokens, trainable_params=trainable,
        artifact=artifact.name, artifact_bytes=path_bytes(artifact), learned=learned,
        interpretable=False, transferable=False, perplexity_before=before, perplexity_after=after,
        curve=log.curve, interrupted=interrupted, calibration=config.calibration,
        calibrated_with=reference.method,
    )  # fmt: skip


# How a gradient run chooses the checkpoint it keeps (config ``checkpoint_rule``), from each dev evaluation's
# accuracy and cross-entropy: the largest key wins, the earlier checkpoint on a tie.
CHECKPOINT_RULES = {
    "dev_accuracy": lambda accuracy, loss: (accuracy,),
    "dev_accuracy_then_loss": lambda accuracy, loss: (accuracy, -loss),
    "dev_loss": lambda accuracy, loss: (-loss,),
}


def dev_cross_entropy(logprobs: np.ndarray, examples) -> float:
    """The mean cross-entropy over the classes of the (calibrated) dev scores: the training loss's measure
    on dev, finer than accuracy on a few dozen examples."""
    labels = np.array([ex.label for ex in examples])
    return float(-normalised(logprobs)[np.arange(len(labels)), labels].mean())


def perplexity_before(ctx: MethodContext) -> tuple[list[str], float]:
    """The general held-out sentences and the frozen task LM's perplexity on them (computed once per
    process): the "before" of every method's forgetting check."""
    lm, sentences = ctx.lm, heldout_sentences(ctx.config.heldout_sentences)
    key = ("perplexity", lm.name, len(sentences))
    if key not in ctx.cache:
        ctx.cache[key] = perplexity(lm, sentences)
    return sentences, ctx.cache[key]


PEFT_ADAPTERS = ("lora", "ia3")  # weight adapters PEFT injects into a copy of the model


def check_adapter_modules(config, lm, methods: list[str]) -> None:
    """Module names of ``lora`` and ``ia3`` that the model lacks fail in PEFT only when the run starts (in
    a grid, after the other runs, and a resume may not change them): refused before any run."""
    if not any(m in PEFT_ADAPTERS for m in methods):
        return
    names = [name for name, _ in lm.model.named_modules()]
    linear = sorted({name.rpartition(".")[2] for name, m in lm.model.named_modules()
                     if isinstance(m, torch.nn.Linear)})  # fmt: skip
    for method in (m for m in PEFT_ADAPTERS if m in methods):
        section = getattr(config, method)
        for key in ("target_modules", "feedforward_modules"):
            wanted = getattr(section, key, None) or []
            missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in names)]
            if missing:
                raise RLPromptError(
                    f"{method}.{key}: {lm.name} has no module {missing[0]!r}; its linear layers are "
                    f"{', '.join(linear)} (or leave {method}.{key} out for PEFT's default)"
                )
        extra = set(getattr(section, "feedforward_modules", None) or []) - set(section.target_modules or [])
        if extra and section.target_modules:
            raise RLPromptError(
                f"{method}.feedforward_modules: {sorted(extra)[0]!r} is not in {method}.target_modules "
                "(feed-forward modules are a subset of the target modules)"
            )


def _peft_config(name: str, section, kind: str):
    """The PEFT config of adapter ``name`` from its config section."""
    from peft import IA3Config, LoraConfig, TaskType

    task_type = TaskType.CAUSAL_LM if kind == "causal" else None
    if name == "lora":
        return LoraConfig(
            r=section.r, lora_alpha=section.lora_alpha, lora_dropout=section.lora_dropout,
            target_modules=section.target_modules, task_type=task_type,
        )  # fmt: skip
    return IA3Config(
        target_modules=section.target_modules, feedforward_modules=section.feedforward_modules,
        task_type=task_type,
    )  # fmt: skip


def initial_prefix(lm, ids, n: int) -> torch.Tensor:
    """PEFT prefix-tuning rows for the keys and values ``lm`` computes on ``ids`` repeated to ``n`` tokens
    (one sequence, so positions 0..n-1 are those the prefix stands at): the prefix starts as if those words
    were written before the input. Row t holds, layer by layer, the key then the value of token t, each
    heads x head_dim, the layout ``PeftModel.get_prompt`` unpacks."""
    ids = (list(ids) * n)[:n]
    with torch.inference_mode():
        output = lm.model(input_ids=torch.tensor([ids], device=lm.model.device), use_cache=True)
    cache = returned_cache(output)
    rows = [tensor[0] for layer in cache.layers for tensor in (layer.keys, layer.values)]  # 2L x (H, n, D)
    return torch.stack(rows).permute(2, 0, 1, 3).reshape(n, -1).float().clone()


def initial_soft_prompt(lm, scorer, n: int, text: str, rng: np.random.Generator) -> torch.Tensor:
    """The embeddings of ``text``'s tokens repeated to ``n`` virtual tokens (as PEFT's text init does);
    for an empty text, the embeddings of random vocabulary tokens."""
    embed = lm.model.get_input_embeddings()
    ids = list(scorer.prompt_ids(text)) if text else []
    if not ids:
        ids = [int(i) for i in rng.integers(0, embed.weight.shape[0], size=n)]
    ids = (ids * n)[:n]
    with torch.no_grad():
        return embed(torch.tensor(ids, device=embed.weight.device)).detach().clone().float()
