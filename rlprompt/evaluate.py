"""Evaluate prompts on a task: ``python -m rlprompt.evaluate --model M --task T --prompt "..."``.

Prints accuracy, macro-F1 and per-class accuracy for each prompt (``--json`` for machine-readable
output on stdout; progress goes to stderr). ``--prompt-file run/prompt.json`` evaluates an exported
prompt (its exact token ids on the model it was learned on, its text elsewhere). ``--adapter DIR``
evaluates an exported baseline (``soft_prompt/``, ``lora/``, ``ia3/`` or ``model/`` of a training run) the
way it was trained. Without any prompt it evaluates the task's manual prompt and the empty prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from rlprompt.backends import Capability, load_task_model, make_label_scorer, require
from rlprompt.calibration import CALIBRATIONS, Calibration, calibrate, scorer_prior, task_calibration
from rlprompt.console import add_verbose_flag
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.export import (
    PEFT_WEIGHT_ADAPTERS,
    SOFT_PROMPT_METHODS,
    load_adapter_meta,
    load_classification_prompt,
)
from rlprompt.metrics import ClassificationMetrics, classification_metrics
from rlprompt.models import DTYPES, LanguageModel, load_model, wrap_model
from rlprompt.scoring import LabelScorer, PromptLike
from rlprompt.tasks import DEFAULT_SEED, FEW_SHOT_SEEDS, SPLITS, Task, load_task


@dataclass
class PromptResult:
    """A prompt's metrics: ``metrics`` under the calibration asked for (``calibration``), ``raw`` without."""

    prompt: str
    prompt_ids: list[int]
    metrics: ClassificationMetrics
    raw: ClassificationMetrics | None = None
    calibration: str = "none"

    def __post_init__(self) -> None:
        if self.raw is None:
            self.raw = self.metrics


def evaluate_prompts(
    scorer: LabelScorer, examples, prompts: list[PromptLike], progress: bool = False,
    calibration: Calibration | None = None,
) -> list[PromptResult]:  # fmt: skip
    """Score every prompt on every example in one batched Scorer call and compute metrics, raw and (with
    ``calibration``) calibrated with each prompt's own prior on this model."""
    logprobs = scorer.score(prompts, examples, progress=progress)
    prior = scorer_prior(scorer, prompts, calibration, evaluated=examples)
    calibrated = calibrate(logprobs, prior)
    labels = np.array([ex.label for ex in examples])
    method = calibration.method if calibration is not None else "none"
    results = []
    for prompt, lp, cal in zip(prompts, logprobs, calibrated, strict=True):
        ids = list(scorer.prompt_ids(prompt))
        text = prompt if isinstance(prompt, str) else scorer.lm.decode(ids)
        raw = classification_metrics(lp, labels)
        metrics = classification_metrics(cal, labels) if prior is not None else raw
        results.append(PromptResult(text, ids, metrics, raw, method))
    return results


def reference_results(
    scorer: LabelScorer, task: Task, manual: str, calibration_method: str, progress: bool = False
) -> dict:
    """The reference rows every comparison carries: the manual prompt and the empty prompt on test, raw
    and calibrated (``calibration_method``: the run's, or batch when the run uses none)."""
    calibration = task_calibration(calibration_method, task)
    manual_result, empty_result = evaluate_prompts(
        scorer, task.examples("test"), [manual, ""], progress, calibration
    )
    return {
        "calibrated_with": calibration_method,
        "rows": [
            {
                "name": name,
                "prompt": prompt,
                "test_accuracy_raw": r.raw.accuracy,
                "test_accuracy_calibrated": r.metrics.accuracy,
            }
            for name, prompt, r in (
                ("manual prompt", manual, manual_result),
                ("empty prompt", "", empty_result),
            )
        ],  # fmt: skip
    }


def prompt_budget(lm: LanguageModel, prompts: list[PromptLike]) -> int:
    """Tokens to reserve for the longest of ``prompts`` (text prompts get one token of slack for the
    template's lead whitespace), so that long sentences are cut no more than needed."""
    return max(len(p) if not isinstance(p, str) else len(lm.encode(" " + p)) + 1 for p in prompts)


def make_scorer(lm: LanguageModel, task: Task, template: str | None = None, **kwargs) -> LabelScorer:
    """The scorer for a task on a model (from the model's backend), with the task's template for that
    model kind unless given."""
    return make_label_scorer(lm, template or task.template_for(lm.kind), task.verbalizers, **kwargs)


def evaluate_adapter(
    path: str, lm: LanguageModel, task: Task, examples, batch_tokens: int = 4096, progress: bool = False,
    calibration: Calibration | None = None,
) -> PromptResult:  # fmt: skip
    """Evaluate an exported baseline (see :func:`rlprompt.export.save_adapter`) on ``lm``, with its own
    template and, for LoRA and fine-tuned models, its manual prompt; raw and (with ``calibration``)
    calibrated with its own prior."""
    import copy

    meta = load_adapter_meta(path)
    if meta["model_kind"] != lm.kind:
        raise RLPromptError(f"{path} was trained on a {meta['model_kind']} model; {lm.name} is {lm.kind}")
    if meta["method"] in SOFT_PROMPT_METHODS:
        from peft import PeftModel

        # Reads the prompt embeddings; prompt tuning leaves the wrapped (shared) model itself unchanged.
        soft = PeftModel.from_pretrained(lm.model, path).prompt_encoder["default"].embedding.weight.detach()
        scorer = make_scorer(
            lm, task, meta["template"], batch_tokens=batch_tokens, prompt_budget=soft.shape[0]
        )

        def score(inputs, progress=False):
            return scorer.evaluate_logprobs(inputs, soft, progress=progress)[None]

        name = f"soft prompt ({soft.shape[0]} virtual tokens)"
    elif meta["method"] == "prefix_tuning":
        import torch
        from peft import PeftModel

        wrapper = PeftModel.from_pretrained(copy.deepcopy(lm.model), path)
        adapted = wrap_model(f"{lm.name}+prefix_tuning", wrapper.get_base_model(), lm.tokenizer, lm.kind)
        prompt = meta["prompt"] or ""
        scorer = make_scorer(adapted, task, meta["template"], batch_tokens=batch_tokens,
                             prompt_budget=prompt_budget(lm, [prompt]), prefix_model=wrapper)  # fmt: skip
        embed = lm.model.get_input_embeddings()
        with torch.no_grad():
            ids = torch.tensor(list(scorer.prompt_ids(prompt)), dtype=torch.long, device=embed.weight.device)
            prompt_embeds = embed(ids)

        def score(inputs, progress=False):
            return scorer.evaluate_logprobs(inputs, prompt_embeds, reuse_prefix=False, progress=progress)[
                None
            ]

        name = f"prefix_tuning ({prompt!r})"
    else:
        if meta["method"] in PEFT_WEIGHT_ADAPTERS:
            from peft import PeftModel

            merged = PeftModel.from_pretrained(copy.deepcopy(lm.model), path).merge_and_unload()
            adapted = wrap_model(f"{lm.name}+{meta['method']}", merged, lm.tokenizer, lm.kind)
        else:
            adapted = load_model(str(path), lm.device, lm.dtype)
        prompt = meta["prompt"] or ""
        scorer = make_scorer(
            adapted,
            task,
            meta["template"],
            batch_tokens=batch_tokens,
            prompt_budget=prompt_budget(lm, [prompt]),
        )

        def score(inputs, progress=False):
            return scorer.score([prompt], inputs, progress=progress)

        name = f"{meta['method']} ({prompt!r})"
    return scored_result(name, score, examples, calibration, scorer, progress)


def scored_result(
    name: str, score, examples, calibration: Calibration | None, scorer: LabelScorer, progress: bool = False
) -> PromptResult:
    """Metrics of one scoring function (``score(inputs) -> (1, inputs, classes)``: a soft prompt, an adapted
    model), raw and calibrated with its own prior."""
    labels = np.array([ex.label for ex in examples])
    logprobs = score(examples, progress=progress)
    prior = None
    if calibration is not None and calibration.active:
        prior = calibration.prior(score, scorer.lm, scorer.accepts_input, evaluated=examples)
    raw = classification_metrics(logprobs[0], labels)
    metrics = classification_metrics(calibrate(logprobs, prior)[0], labels) if prior is not None else raw
    return PromptResult(name, [], metrics, raw, calibration.method if calibration is not None else "none")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlprompt.evaluate",
        description="Evaluate discrete prompts on a task with a frozen language model.",
    )
    p.add_argument(
        "--model",
        help="alias, local directory or cached HF id (default: the adapter's or prompt file's model, "
        "else smollm2-135m)",
    )
    p.add_argument(
        "--task", help="built-in task or a task YAML file (default: the prompt file's task, else sst-2)"
    )
    p.add_argument("--seed", choices=FEW_SHOT_SEEDS, help=f"few-shot data seed (default: {DEFAULT_SEED})")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: %(default)s")
    p.add_argument(
        "--prompt", action="append", help='a prompt to evaluate (repeatable; "" is the empty prompt)'
    )
    p.add_argument("--prompt-file", action="append", default=[], help="an exported prompt.json (repeatable)")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="an exported soft_prompt/, bbt/, prefix_tuning/, lora/, ia3/ or model/ (repeatable)",
    )
    p.add_argument("--template", help='override the task\'s template, e.g. "{sentence} {prompt} <mask> ."')
    p.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        help="remove each prompt's label prior on this model before the argmax (default: the prompt file's, "
        "else none); batch: from the task's unlabelled train and dev inputs, contextual: content-free "
        "inputs, domain: random in-domain words, transductive: the evaluated inputs themselves",
    )
    p.add_argument("--limit", type=int, help="evaluate on the first N examples only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES),
        help="the model's precision (default: %(default)s: bfloat16 on a GPU, float32 on a CPU)",
    )  # fmt: skip
    p.add_argument(
        "--batch-tokens", type=int, default=4096, help="tokens per forward pass (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise RLPromptError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_tokens < 16:
        raise RLPromptError(f"--batch-tokens must be at least 16, got {args.batch_tokens}")
    if args.adapter and (args.prompt is not None or args.prompt_file or args.template):
        raise RLPromptError(
            "--adapter evaluates an exported baseline on its own; leave out --prompt, "
            "--prompt-file and --template"
        )
    files = [load_classification_prompt(path) for path in args.prompt_file]
    adapters = [load_adapter_meta(path) for path in args.adapter]
    source = files[0] if files else None  # the first prompt file (or adapter) supplies the defaults
    meta = adapters[0] if adapters else None
    if source is not None:
        task_name, seed = source.task_source or source.task, source.data_seed
    elif meta is not None:
        task_name, seed = meta.get("task_source") or meta["task"], meta.get("data_seed")
    else:
        task_name, seed = "sst-2", None
    data_seed = args.seed or seed or DEFAULT_SEED
    task = load_task(args.task or task_name, data_seed)
    examples = task.examples(args.split)[: args.limit]
    default_model = meta["model"] if meta else (source.model if source else "smollm2-135m")
    model_name = args.model or default_model
    if adapters:
        require(model_name, Capability.DIFFERENTIABLE, "--adapter (trained weights run in this process)")
    lm = load_task_model(model_name, args.device, args.dtype)
    recorded = (source.calibration if source else None) or (meta.get("calibration") if meta else None)
    method = args.calibration or recorded or "none"
    calibration = task_calibration(method, task)
    start = time.perf_counter()
    if adapters:
        results = [
            evaluate_adapter(
                path, lm, task, examples, args.batch_tokens, progress=True, calibration=calibration
            )
            for path in args.adapter
        ]
        template = adapters[0]["template"]
    else:
        template = args.template or (source.template_for(lm.kind) if source else None)
        prompts: list[PromptLike] = [learned.prompt_for(lm.name) for learned in files]
        if args.prompt is not None or not files:
            prompts += args.prompt if args.prompt is not None else [task.manual_prompt, ""]
        budget = prompt_budget(lm, prompts)
        scorer = make_scorer(lm, task, template, batch_tokens=args.batch_tokens, prompt_budget=budget)
        results = evaluate_prompts(scorer, examples, prompts, progress=True, calibration=calibration)
        template = scorer.template.text
    seconds = time.perf_counter() - start

    if args.json:
        payload = {
            "model": lm.name,
            "model_kind": lm.kind,
            "device": lm.device,
            "dtype": lm.dtype,
            "task": task.name,
            "split": args.split,
            "seed": data_seed,
            "template": template,
            "verbalizers": task.verbalizers,
            "calibration": method,
            "seconds": round(seconds, 3),
            "results": [
                {
                    "prompt": r.prompt,
                    "prompt_ids": r.prompt_ids,
                    **r.metrics.as_dict(task.class_names),
                    "raw": r.raw.as_dict(task.class_names),
                }
                for r in results
            ],  # fmt: skip
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    calibrated = f", {method} calibration" if method != "none" else ""
    print(
        f"{task.name} {args.split} ({len(examples)} examples) on {lm.name} ({lm.kind} LM, {lm.device}, "
        f"{lm.dtype}), "
        f"template {template!r}, verbalizers {task.verbalizers}{calibrated}, {seconds:.1f} s"
    )
    print(format_table(results, task.class_names))
    return 0


def format_table(results: list[PromptResult], class_names: list[str]) -> str:
    """A plain-text table: prompt, accuracy, macro-F1, per-class accuracy (all calibrated when the results
    are), and the raw accuracy beside them when they are calibrated."""
    width = max([len("prompt")] + [len(repr(r.prompt)) for r in results])
    calibrated = any(r.calibration != "none" for r in results)
    header = f"{'prompt':<{width}}  {'accuracy':>8}  {'macro-F1':>8}  " + "  ".join(
        f"{n:>8}" for n in class_names
    )
    if calibrated:
        header += f"  {'raw acc.':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        per_class = "  ".join(
            "     n/a" if np.isnan(v) else f"{v:8.3f}" for v in r.metrics.per_class_accuracy
        )
        line = f"{r.prompt!r:<{width}}  {r.metrics.accuracy:8.3f}  {r.metrics.macro_f1:8.3f}  {per_class}"
        lines.append(line + (f"  {r.raw.accuracy:8.3f}" if calibrated else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
