"""The style-transfer task kind (RLPrompt's second task family): a prompt makes a frozen causal LM rewrite a
sentence into a target style. The data, scorers and objective live in :mod:`rlprompt.style`; this module
loads a task with every setting checked and hands the RL method its objective."""

from __future__ import annotations

import dataclasses

from rlprompt.backends import load_task_model
from rlprompt.errors import RLPromptError
from rlprompt.kinds import LoadedTask, resolved
from rlprompt.models import LanguageModel, same_tokenizer


def load(config) -> LoadedTask:
    """A style-transfer task and its causal task LM, with every setting checked before a run starts.
    Calibration removes a label prior; rewriting has no labels, so style runs score raw (and say so)."""
    from rlprompt.models import _bundle_directory
    from rlprompt.style import ENCODER_BUNDLE, STYLE_TASKS, load_style_task

    if config.task.name not in STYLE_TASKS:
        raise RLPromptError(
            f"task.name {config.task.name!r}: the style kind's tasks are {', '.join(STYLE_TASKS)}"
        )
    if config.task.test_examples is not None:
        raise RLPromptError("task.test_examples applies to classification tasks, not to style transfer")
    task = load_style_task(config.task.name, config.task.seed, config.style.target, config.style.dev_inputs)
    if len(task.train) < config.env.examples_per_reward:  # dev takes its inputs from the training pool
        raise RLPromptError(
            f"style.dev_inputs: {config.style.dev_inputs} leaves {len(task.train)} of {config.task.name}'s "
            f"{len(task.train) + len(task.dev)} source-style training inputs to learn from, fewer than "
            f"env.examples_per_reward ({config.env.examples_per_reward}); use fewer dev inputs"
        )
    _bundle_directory(ENCODER_BUNDLE)  # the content scorer's bundle is installed (else: how to install it)
    try:
        import sacrebleu  # noqa: F401 - the test report needs it; say so now, not after training
    except ImportError:
        raise RLPromptError("style transfer needs sacrebleu for BLEU: pip install sacrebleu") from None
    if config.task.verbalizers is not None:
        raise RLPromptError(
            f"task.verbalizers does not apply to {config.task.name!r}: rewrites have no labels"
        )
    if config.task.template is not None:
        raise RLPromptError(
            f"task.template does not apply to {config.task.name!r}: rewrites use RLPrompt's template "
            '{prompt} "{sentence}" "'
        )
    if config.task.demonstrations:
        raise RLPromptError(
            f"task.demonstrations: {config.task.demonstrations} puts labelled examples before each input; "
            f"{config.task.name!r} has no labels, so set task.demonstrations: 0"
        )
    if config.task.exclude_train:
        raise RLPromptError(
            f"task.exclude_train does not apply to {config.task.name!r}: rewrites learn from no labels"
        )
    if config.ensemble > 1:
        raise RLPromptError(
            f"ensemble: {config.ensemble} combines classification prompts' label probabilities; style "
            "transfer writes rewrites, so set ensemble: 1"
        )
    if config.rl.polish_rounds:
        raise RLPromptError("rl.polish_rounds applies to classification tasks only; set it to 0")
    lm = load_task_model(config.model, config.device, config.dtype)
    if lm.kind != "causal":
        raise RLPromptError(
            f"style transfer generates rewrites, so it needs a causal model; {lm.name} is a {lm.kind} model"
        )
    if config.policy.backbone is not None:  # checked now: a dry run passes what the run would refuse
        from rlprompt.vocab import policy_model

        _check_policy_tokenizer(lm, policy_model(config))
    config = dataclasses.replace(resolved(config, lm), calibration="none")
    return LoadedTask(task, lm, config, test_scorer=None)  # the objective generates and scores rewrites


def _check_policy_tokenizer(lm: LanguageModel, policy_lm: LanguageModel) -> None:
    """The rewriter takes the policy's token ids: the two must share one tokenizer."""
    if not same_tokenizer(lm, policy_lm):
        raise RLPromptError(
            f"policy.backbone {policy_lm.name!r} has a different tokenizer from the task model "
            f"{lm.name!r}; style transfer hands the policy's token ids to the rewriter, so they must "
            "share one"
        )


def objective(ctx, policy_lm: LanguageModel):
    from rlprompt.style import StyleObjective

    _check_policy_tokenizer(ctx.lm, policy_lm)
    style = ctx.config.style
    return StyleObjective(
        ctx.lm, ctx.task, samples=style.samples, eval_samples=style.eval_samples, top_k=style.top_k,
        max_new_tokens=style.max_new_tokens, seed=ctx.seed, test_inputs=style.test_inputs,
    )  # fmt: skip
