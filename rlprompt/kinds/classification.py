"""The classification task kind: a prompt makes a frozen LM label a sentence (or pair) through verbalizer
words. Its tasks are the built-in few-shot benchmarks, task YAML files and data directories
(:mod:`rlprompt.tasks`); the objective scores through the Scorer: the env.reward in training, dev accuracy
to choose a prompt, and test accuracy (raw and calibrated) of the chosen, manual and empty prompts."""

from __future__ import annotations

import dataclasses

import numpy as np

from rlprompt.backends import load_task_model
from rlprompt.calibration import (
    calibrate,
    log_prior,
    reference_method,
    scorer_prior,
    task_calibration,
)
from rlprompt.errors import RLPromptError
from rlprompt.evaluation import (
    ensemble_accuracies,
    ensemble_result,
    ensemble_scores,
    evaluate_prompts,
    make_scorer,
    prompt_budget,
)
from rlprompt.kinds import LoadedTask, resolved
from rlprompt.methods.base import (
    Candidate,
    MethodContext,
    TestResult,
    classification_correct_of,
    classification_metrics_of,
)
from rlprompt.models import LanguageModel, same_tokenizer
from rlprompt.registry import METHODS, methods_with_artifact
from rlprompt.tasks import SPLITS, load_task
from rlprompt.templates import demonstrations_template, draw_demonstrations
from rlprompt.vocab import TRANSLATION_ROOM


def load(config) -> LoadedTask:
    """The task (every split read and checked), the task LM and the shared test scorer."""
    task = load_task(config.task.name, config.task.seed)
    task.test_limit = config.task.test_examples
    if config.task.verbalizers is not None:
        if len(config.task.verbalizers) != task.num_classes:
            raise RLPromptError(
                f"task.verbalizers {config.task.verbalizers}: {task.name} has {task.num_classes} classes "
                f"({', '.join(task.class_names)}), so it needs {task.num_classes} words, in that order"
            )
        task.verbalizers = list(config.task.verbalizers)
    for split in SPLITS:  # every split is read (and checked) before anything is written
        task.examples(split)
    task.training_examples(config.task.exclude_train)  # its ids are checked too
    lm = load_task_model(config.model, config.device, config.dtype)
    config = resolved(config, lm)
    # One test scorer for the frozen LM with the task template: its sentence prefixes are computed once and
    # shared by every method that leaves the model unchanged. Its prompt budget fits every method's prompt.
    # Built before the run directory: it checks the template, the verbalizers and the prompt budget.
    test_scorer = make_scorer(lm, task, config.task.template, prompt_budget=_test_budget(config, task, lm),
                              prefix_cache_mb=4096)  # fmt: skip
    if config.task.demonstrations:
        for_seed(config, task, lm, config.seed_list[0], test_scorer)  # checks the longer template too
    return LoadedTask(task, lm, config, test_scorer)


def _test_budget(config, task, lm: LanguageModel) -> int:
    """The prompt tokens the test scorer reserves: room for every method's prompt (soft prompts sit at the
    {prompt} slot; a prefix's keys and values do not take the slot's room)."""
    manual = config.manual_prompt_for(task)
    virtual = [getattr(config, METHODS[name].section).num_virtual_tokens
               for name in methods_with_artifact("peft_prompt")]  # fmt: skip
    return max(config.env.prompt_length, *virtual, prompt_budget(lm, [manual, *config.manual_prompts]))


def for_seed(config, task, lm: LanguageModel, seed: int, test_scorer):
    """The config and test scorer of one seed's runs: as loaded, or with ``task.demonstrations`` the
    seed's demonstrations written into the template and their ids added to ``task.exclude_train`` (no
    method trains on an input whose answer the template shows; as LM-BFF leaves a query out of its own
    demonstrations), with ``task.demonstrations`` then 0, so that the run's config.yaml repeats it, and
    a test scorer of its own for the template."""
    k = config.task.demonstrations
    if not k:
        return config, test_scorer
    train = task.training_examples(config.task.exclude_train)
    shown = draw_demonstrations(train, k, seed)
    if len(shown) >= len(train):
        raise RLPromptError(
            f"task.demonstrations: {k} leaves none of the {len(train)} training examples of {task.name} to "
            "train on (the demonstrations are left out of training); lower it or add examples"
        )
    config = with_demonstrations(config, task, lm, shown)
    scorer = make_scorer(
        lm, task, config.task.template, prompt_budget=_test_budget(config, task, lm), prefix_cache_mb=4096
    )
    return config, scorer


def with_demonstrations(config, task, lm: LanguageModel, shown):
    """``config`` with the training examples ``shown`` written before its template (each filled with the
    manual prompt and its label word), left out of training (``task.exclude_train``), and
    ``task.demonstrations`` 0: the config a run behind those demonstrations records."""
    template = demonstrations_template(
        config.task.template or task.template_for(lm.kind), lm.kind, shown, task.verbalizers,
        config.manual_prompt_for(task), config.in_context.separator,
    )  # fmt: skip
    excluded = [*config.task.exclude_train, *(ex.uid for ex in shown)]
    return dataclasses.replace(config, task=dataclasses.replace(
        config.task, template=template, demonstrations=0, exclude_train=excluded))  # fmt: skip


def objective(ctx: MethodContext, policy_lm: LanguageModel) -> ClassificationObjective:
    """The objective of a prompt written in ``policy_lm``'s tokens for the run's task LM."""
    config, lm = ctx.config, ctx.lm
    # Sentences get all the room but what the longest prompt scored here (learned or manual) needs; a
    # prompt re-tokenized by another tokenizer may take a few times its length.
    longest = config.env.prompt_length * (1 if same_tokenizer(lm, policy_lm) else TRANSLATION_ROOM)
    budget = max(longest, prompt_budget(lm, [ctx.manual_prompt]))
    scorer = make_scorer(lm, ctx.task, config.task.template, prompt_budget=budget)
    return ClassificationObjective(scorer, ctx.task, config, policy_lm)


class ClassificationObjective:
    """Classification through the Scorer: the gap reward in training, dev accuracy (the gap reward breaks
    ties) for choosing the prompt, and test accuracy of the best prompt and of the manual one."""

    metric = "accuracy"

    def __init__(self, scorer, task, config, policy_lm: LanguageModel | None = None):
        self.scorer, self.task, self.config = scorer, task, config
        self.policy_lm = policy_lm or scorer.lm
        self.shared_tokenizer = same_tokenizer(scorer.lm, self.policy_lm)
        self.train = task.training_examples(config.task.exclude_train)
        self.dev_examples = task.examples("dev")
        self.dev_labels = np.array([ex.label for ex in self.dev_examples])
        self.calibration = task_calibration(config.calibration, task)

    def task_prompt(self, policy_ids) -> tuple[int, ...] | str:
        """What the task LM is given for a prompt the policy wrote: its ids when the two share a tokenizer,
        else its text (re-tokenized by the task LM's tokenizer, or sent as text to a server)."""
        if self.shared_tokenizer:
            return tuple(policy_ids)
        return self.policy_lm.decode(list(policy_ids)).strip()

    def policy_prompt_ids(self, text: str) -> tuple[int, ...]:
        """A text prompt in the policy's tokens: as the template encodes a manual prompt when the two
        share a tokenizer, else the policy's own encoding of it after a space (a masked LM: as it is)."""
        if self.shared_tokenizer:
            return tuple(self.scorer.prompt_ids(text))
        policy = self.policy_lm
        return tuple(policy.encode(" " + text.strip() if policy.kind == "causal" else text.strip()))

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
        """The training reward of ``prompts`` on every training example, calibrated as in training."""
        from rlprompt.envs.prompt_env import label_reward

        prompts = self.task_prompts(prompts)
        logprobs = self.scorer.score(prompts, self.train)
        prior = self.reward_prior()
        if prior is not None:
            logprobs = calibrate(logprobs, prior(prompts, logprobs))
        labels = np.array([ex.label for ex in self.train])
        env = self.config.env
        return label_reward(logprobs, labels, env.reward, env.correct_scale, env.wrong_scale)

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
            policy_lm=self.policy_lm, reward=env_cfg.reward,
        )  # fmt: skip

    def _dev_scores(self, prompts) -> np.ndarray:
        """(prompts, dev examples, classes) label log-probs, calibrated with the prior from the unlabelled
        training and dev inputs when the run calibrates (cached after the first call)."""
        prompts = self.task_prompts(prompts)
        logprobs = self.scorer.score(prompts, self.dev_examples)
        return calibrate(logprobs, scorer_prior(self.scorer, prompts, self.calibration))

    def dev(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Dev accuracy and training reward per prompt (:meth:`_dev_scores`)."""
        from rlprompt.envs.prompt_env import batch_accuracy, label_reward

        logprobs = self._dev_scores(prompts)
        env = self.config.env
        reward = label_reward(logprobs, self.dev_labels, env.reward, env.correct_scale, env.wrong_scale)
        return batch_accuracy(logprobs, self.dev_labels), reward

    def dev_ensemble(self, prompts) -> float:
        """Dev accuracy of ``prompts`` as one ensemble (:func:`ensemble_scores`, as on test); their dev
        scores are cached from the selection, so this scores nothing new."""
        from rlprompt.envs.prompt_env import batch_accuracy

        scores = ensemble_scores(self._dev_scores(prompts))
        return float(batch_accuracy(scores[None], self.dev_labels)[0])

    def export_fields(self) -> dict:
        task = self.task
        return {"task_kind": "classification", "template": self.scorer.template.text,
                "verbalizers": list(task.verbalizers), "class_names": list(task.class_names)}  # fmt: skip

    def test_top(self, ctx: MethodContext, top: list[Candidate]) -> tuple[list[float], dict[int, float]]:
        """The headline test accuracy (calibrated as the run scored) of each of ``top`` (the best prompts
        by dev; the chosen one's scores are cached from :meth:`test`), and the accuracy of ensembles of the
        first 3, 5 and 10 of them (:func:`ensemble_accuracies`)."""
        reference = task_calibration(reference_method(self.config.calibration), self.task)
        prompts = [self.task_prompt(c.ids) for c in top]
        examples = self.task.examples("test")
        results = evaluate_prompts(ctx.test_scorer, examples, prompts, ctx.progress, reference)
        active = self.calibration.active
        labels = [ex.label for ex in examples]
        ensembles = ensemble_accuracies(results, labels, active)
        return [float(r.scored(active).accuracy) for r in results], ensembles

    def test(self, ctx: MethodContext, best: Candidate, manual: str, members: list[Candidate] = (),
             dev_score: float | None = None) -> TestResult:  # fmt: skip
        """The chosen prompt, the manual prompt and the empty prompt on test, raw and calibrated (with the
        run's calibration, or batch calibration when the run uses none); the headline follows the run.
        With ``members`` (the other prompts of an ensemble, ``config.ensemble``) the learned row is the
        ensemble of ``best`` and them, whose dev accuracy is ``dev_score``."""
        examples = self.task.examples("test")
        reference = task_calibration(reference_method(self.config.calibration), self.task)
        learned_prompts = [self.task_prompt(c.ids) for c in (best, *members)]
        learned, manual_result, empty_result, *others = evaluate_prompts(
            ctx.test_scorer, examples, [learned_prompts[0], manual, "", *learned_prompts[1:]], ctx.progress,
            reference,
        )  # fmt: skip
        if others:
            learned = ensemble_result([learned, *others], [ex.label for ex in examples])
        name = f"ensemble of {len(learned_prompts)}" if others else "learned prompt"
        dev_score = best.dev_score if dev_score is None else dev_score
        headline = learned.scored(self.calibration.active)
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
            f"dev accuracy {dev_score:.3f} ({scored})   "
            f"test accuracy {headline.accuracy:.3f} ({scored})",
            f"test accuracy, raw -> {reference.method}-calibrated:",
            f"  {name:<16} {learned.raw.accuracy:.3f} -> {learned.metrics.accuracy:.3f}",
            f"  manual {manual!r:<9} {manual_result.raw.accuracy:.3f} -> "
            f"{manual_result.metrics.accuracy:.3f}",
            f"  empty prompt     {empty_result.raw.accuracy:.3f} -> {empty_result.metrics.accuracy:.3f}",
        ])  # fmt: skip
        active = self.calibration.active
        return TestResult(classification_metrics_of(learned, active), metrics, summary,
                          classification_correct_of(learned, active))  # fmt: skip
