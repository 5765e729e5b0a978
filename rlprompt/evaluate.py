"""Evaluate prompts on a task: ``python -m rlprompt.evaluate --model M --task T --prompt "..."``.

Prints accuracy, macro-F1 and per-class accuracy for each prompt (``--json`` for machine-readable
output on stdout; progress goes to stderr). ``--prompt-file run/prompt.json`` evaluates an exported
prompt (its exact token ids on the model it was learned on, its text elsewhere; an ensemble's file: its
prompts and, as one more row, their ensemble). ``--adapter DIR``
evaluates an exported baseline (``soft_prompt/``, ``lora/``, ``ia3/`` or ``model/`` of a training run) the
way it was trained. Without any prompt it evaluates the task's manual prompt and the empty prompt.
"""

from __future__ import annotations

import json
import sys
import time

from rlprompt.backends import Capability, load_task_model, require
from rlprompt.calibration import CALIBRATIONS, task_calibration
from rlprompt.console import add_verbose_flag
from rlprompt.errors import ArgumentParser, RLPromptError, run_cli
from rlprompt.evaluation import (
    PromptResult,
    ensemble_result,
    evaluate_adapter,
    evaluate_prompts,
    make_scorer,
    prompt_budget,
)
from rlprompt.export import (
    load_adapter_meta,
    load_classification_prompt,
    own_task,
    recorded_label_words,
    recorded_task_name,
    same_model,
)
from rlprompt.models import DTYPES
from rlprompt.scoring import PromptLike
from rlprompt.tables import number, text_table
from rlprompt.tasks import DEFAULT_SEED, FEW_SHOT_SEEDS, SPLITS, load_task, sampled_test


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlprompt.evaluate",
        description="Evaluate discrete prompts on a task with a frozen language model.",
    )
    p.add_argument(
        "--model",
        help="alias, local directory, cached HF id or openai:<base URL>[#options] (a server; README "
        "'Task-LM backends') (default: the adapter's or prompt file's model, else smollm2-135m)",
    )
    p.add_argument(
        "--task", help="built-in task or a task YAML file (default: the prompt file's task, else sst-2)"
    )
    p.add_argument("--seed", choices=FEW_SHOT_SEEDS, help=f"few-shot data seed (default: {DEFAULT_SEED})")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: %(default)s")
    p.add_argument(
        "--prompt", action="append", help='a prompt to evaluate (repeatable; "" is the empty prompt)'
    )
    p.add_argument(
        "--prompt-file",
        action="append",
        default=[],
        help="an exported prompt.json, or its run directory (repeatable)",
    )
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="an exported soft_prompt/, bbt/, prefix_tuning/, lora/, ia3/ or model/ (repeatable)",
    )
    p.add_argument(
        "--top-k", type=int,
        help="from each prompt file, its chosen prompt and the next best by dev, K in all (its "
        "top_k_prompts; default: the file's "
        "artifact: the chosen prompt, or an ensemble's prompts and, as one more row, their ensemble)",
    )  # fmt: skip
    p.add_argument(
        "--ensemble", action="store_true",
        help="also evaluate all the prompts (or all the --adapter weights) as one ensemble (each input's "
        "label: the argmax of their mean label log-probabilities, each renormalised over the classes and "
        "calibrated as each one is)",
    )  # fmt: skip
    p.add_argument("--template", help='override the task\'s template, e.g. "{sentence} {prompt} <mask> ."')
    p.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        help="remove each prompt's label prior on this model before the argmax (default: the prompt file's, "
        "else none); batch: from the task's unlabelled train and dev inputs, contextual: content-free "
        "inputs, domain: random in-domain words, transductive: the evaluated inputs themselves",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate on N examples drawn with seed 0 (as task.test_examples draws them; default: a "
        "prompt file's own test sample on its task, else every example)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES),
        help="the model's precision (default: %(default)s: bfloat16 on a GPU or a CPU with native bf16, "
        "else float32)",
    )  # fmt: skip
    p.add_argument(
        "--batch-tokens", type=int, default=4096, help="tokens per forward pass (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    add_verbose_flag(p)
    return p


def _check_files_agree(args, files, kind: str) -> None:
    """Several prompt files are scored with one template, calibration and data split: the first file's,
    unless given. Files that disagree on one not given are refused, not scored under another's."""
    checks = [("template", args.template, lambda f: f.template_for(kind)),
              ("calibration", args.calibration, lambda f: f.calibration),
              ("task", args.task, own_task), ("data seed", args.seed, lambda f: f.data_seed)]  # fmt: skip
    for name, given, of in checks:
        values = list(dict.fromkeys(str(of(f)) for f in files))
        if given is None and len(values) > 1:
            flag = {"data seed": "seed"}.get(name, name)
            raise RLPromptError(
                f"the prompt files differ in their {name} ({' / '.join(values)}); evaluate them separately, "
                f"or give --{flag} to score them all with one"
            )


def _warn_edited_texts(args, files, lm) -> None:
    """On its own model a prompt file is scored by its token ids; a text edited by hand (the ids kept)
    would silently not be what is scored. Warn where the text does not read as the ids, comparing both
    through the tokenizer (encode, then decode) so casing and spacing rules do not count as edits."""
    for path, learned in zip(args.prompt_file, files, strict=True):
        if not same_model(lm.name, learned.model):
            continue  # scored by their text there
        entries = [{"text": learned.text, "token_ids": learned.token_ids}, *(learned.ensemble or [])]
        if args.top_k is not None:
            entries += learned.metrics.get("top_k_prompts") or []
        for entry in {e["text"]: e for e in entries}.values():
            if not all(0 <= i < len(lm.tokenizer) for i in entry["token_ids"]):
                continue  # not this model's ids at all: the scorer refuses them, naming the id
            text, read = entry["text"].strip(), lm.decode(list(entry["token_ids"])).strip()
            if read != text and read != lm.decode(lm.encode(text)).strip():
                print(
                    f"warning: {path}: the text {text!r} is not what its token_ids read on {lm.name} "
                    f"({read!r}); the ids are scored here (to score the text, give it with --prompt)",
                    file=sys.stderr,
                )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for flag, value in (("--model", args.model), ("--task", args.task)):
        if value is not None and not value.strip():  # (an unset shell variable, say): not the default
            raise RLPromptError(f"{flag} is empty: name one, or leave {flag} out for the default")
    if args.limit is not None and args.limit < 1:
        raise RLPromptError(f"--limit must be at least 1, got {args.limit}")
    if args.top_k is not None and args.top_k < 1:
        raise RLPromptError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_k is not None and not args.prompt_file:
        raise RLPromptError("--top-k reads a run's best prompts from its prompt file: give --prompt-file")
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
        task_name, seed = own_task(source), source.data_seed
    elif meta is not None:
        task_name, seed = own_task(meta), meta.get("data_seed")
    else:
        task_name, seed = "sst-2", None
    data_seed = args.seed or seed or DEFAULT_SEED
    task = load_task(args.task or task_name, data_seed)
    chosen_task = task_name if args.task is None else recorded_task_name(args.task)
    # On its own task a prompt or adapter reads labels through the words it trained with
    words = recorded_label_words([*files, *adapters], chosen_task, task.num_classes)
    if words is not None:
        task.verbalizers = words
    limit = args.limit
    if limit is None and args.split == "test" and source is not None and chosen_task == task_name:
        limit = source.test_examples  # the run's metrics came from this sample
    examples = sampled_test(task.examples(args.split), limit)
    default_model = meta["model"] if meta else (source.model if source else "smollm2-135m")
    model_name = args.model or default_model
    for path, adapter in zip(args.adapter, adapters, strict=True):
        if not same_model(model_name, adapter["model"]):
            raise RLPromptError(
                f"{path} is weights for {adapter['model']} (its hidden size and vocabulary); evaluate it on "
                "that model (leave --model out)"
            )
    if adapters:
        require(model_name, Capability.DIFFERENTIABLE, "--adapter (trained weights run in this process)")
    lm = load_task_model(model_name, args.device, args.dtype)
    _check_files_agree(args, files, lm.kind)
    _warn_edited_texts(args, files, lm)
    recorded = (source.calibration if source else None) or (meta.get("calibration") if meta else None)
    method = args.calibration or recorded or "none"
    calibration = task_calibration(method, task)
    labels = [ex.label for ex in examples]
    start = time.perf_counter()
    if adapters:
        # --ensemble over adapters (one method's seeds, say): each reads its own template, calibrated as asked
        members, kind = len(adapters), "adapters"
        if args.ensemble and members < 2:
            raise RLPromptError("--ensemble needs at least 2 adapters (more --adapter)")
        results = [
            evaluate_adapter(
                path, lm, task, examples, args.batch_tokens, progress=True, calibration=calibration
            )
            for path in args.adapter
        ]
        template = adapters[0]["template"]
    else:
        template = args.template or (source.template_for(lm.kind) if source else None)
        prompts: list[PromptLike] = []
        file_ensembles = []  # (file, first prompt's index, prompts): an ensemble file's own ensemble row
        for path, learned in zip(args.prompt_file, files, strict=True):
            if args.top_k is not None:
                members = learned.top_prompts_for(lm.name, args.top_k)
            else:
                members = learned.members_for(lm.name)
                if len(members) > 1:
                    file_ensembles.append((path, len(prompts), len(members)))
            prompts += members
        if args.prompt is not None or not files:
            prompts += args.prompt if args.prompt is not None else [task.manual_prompt, ""]
        members, kind = len(prompts), "prompts"
        if args.ensemble and members < 2:
            raise RLPromptError("--ensemble needs at least 2 prompts (more --prompt, or --top-k)")
        budget = prompt_budget(lm, prompts)
        scorer = make_scorer(lm, task, template, batch_tokens=args.batch_tokens, prompt_budget=budget)
        results = evaluate_prompts(scorer, examples, prompts, progress=True, calibration=calibration)
        for path, first, count in file_ensembles:
            ensemble = ensemble_result(results[first : first + count], labels)
            ensemble.prompt = f"ensemble of {count} prompts ({path})"
            results.append(ensemble)
        template = scorer.template.text
    if args.ensemble:  # every prompt or adapter evaluated above, as one
        ensemble = ensemble_result(results[:members], labels)
        ensemble.prompt = f"ensemble of {members} {kind}"
        results.append(ensemble)
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
    calibrated = any(r.calibration != "none" for r in results)
    headers = ["prompt", "accuracy", "macro-F1", *class_names] + (["raw acc."] if calibrated else [])
    rows = [[repr(r.prompt), number(r.metrics.accuracy), number(r.metrics.macro_f1),
             *(number(v, missing="n/a") for v in r.metrics.per_class_accuracy)]
            + ([number(r.raw.accuracy)] if calibrated else []) for r in results]  # fmt: skip
    return text_table(headers, rows)


if __name__ == "__main__":
    run_cli(main)
