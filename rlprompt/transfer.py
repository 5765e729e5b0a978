"""Transfer tests: do learned prompts keep their effect on other models and tasks?

    python -m rlprompt.transfer --prompts A/prompt.json B/prompt.json \\
        --models smollm2-135m,gemma3-270m,bert-tiny-splade --tasks sst-2,mr,cr

Every prompt is evaluated on every target model and task: on its own task with its own template for the
target's kind (as the run scored it: an instruction, demonstrations), elsewhere with the task's template
for that kind (causal or masked). On the model it was learned on a prompt keeps its token ids; elsewhere it is
re-tokenized from its text; an ensemble's prompts are scored as one row. The task's manual prompt and
the empty prompt are evaluated on every target as reference rows. Writes ``transfer.md``,
``transfer.json`` and ``transfer.png`` (a heatmap).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlprompt.backends import load_task_model
from rlprompt.calibration import CALIBRATIONS, task_calibration
from rlprompt.console import add_verbose_flag
from rlprompt.errors import ArgumentParser, RLPromptError, run_cli
from rlprompt.evaluation import ensemble_result, evaluate_prompts, make_scorer, prompt_budget
from rlprompt.export import (
    ADAPTER_DIRS,
    ADAPTER_META,
    LearnedPrompt,
    load_adapter_meta,
    load_classification_prompt,
    own_task,
    recorded_label_words,
    recorded_task_name,
    same_model,
)
from rlprompt.files import atomic_write_bytes, check_output_dir
from rlprompt.models import load_model
from rlprompt.registry import ARTIFACTS, METHODS
from rlprompt.tables import markdown_table
from rlprompt.tasks import DEFAULT_SEED, FEW_SHOT_SEEDS, load_task, sampled_test
from rlprompt.templates import Template


@dataclass
class Row:
    name: str
    kind: str  # "learned", "manual" or "empty"
    text: str
    source_model: str | None = None
    method: str | None = None
    # "task/model" -> {"accuracy", "gain", "calibrated", "gain_calibrated_manual", "gain_calibrated_empty"}
    # or {"not_applicable"}
    cells: dict = field(default_factory=dict)


def load_source(path: Path) -> LearnedPrompt:
    """A prompt file, or a weight artifact (an exported soft prompt, adapter or model directory, or the run
    directory holding one) as a row of its own: the table shows it as not applicable on other models, so a
    comparison's artifacts can all be named. A run directory with a ``prompt.json`` reads that."""
    path = Path(path)
    if not path.is_dir():
        return load_classification_prompt(path)
    if (path / "prompt.json").is_file():
        return load_classification_prompt(path / "prompt.json")
    exported = [d for d in [path, *(path / name for name in sorted(set(ADAPTER_DIRS.values())))]
                if (d / ADAPTER_META).is_file()]  # fmt: skip
    if not exported:
        raise RLPromptError(
            f"{path}: a directory with neither prompt.json nor an exported baseline ({ADAPTER_META}); give a "
            "prompt.json file or a run directory"
        )
    meta = load_adapter_meta(exported[0])
    spec = METHODS[meta["method"]]
    return LearnedPrompt(
        text=f"({ARTIFACTS[spec.artifact].description})", token_ids=[], model=meta["model"],
        model_kind=meta["model_kind"], template=meta["template"], verbalizers=list(meta["verbalizers"]),
        task=meta["task"], method=meta["method"], seed=meta["seed"], class_names=meta.get("class_names", []),
        data_seed=meta.get("data_seed"), task_source=meta.get("task_source"), metrics=meta.get("metrics", {}),
        calibration=meta.get("calibration", "none"),
    )  # fmt: skip


def _weights(prompt: LearnedPrompt):
    """The artifact spec of a source that is weights (a soft prompt, adapter or model), else None."""
    artifact = ARTIFACTS[METHODS[prompt.method].artifact] if prompt.method in METHODS else None
    return artifact if artifact is not None and artifact.weights else None


def round_trip_problem(prompt: LearnedPrompt, device: str = "auto", dtype: str = "auto") -> str | None:
    """Why re-tokenizing the prompt's text for its own model does not give back its ids, or None (the
    model is loaded where the transfer's targets are, so a target's copy is reused)."""
    try:
        lm = load_model(prompt.model, device, dtype)
    except RLPromptError as err:
        return f"round trip not checked: {err}"
    from rlprompt.templates import TemplateEncoder

    template = Template.parse(prompt.template, lm.kind)
    ids = list(
        TemplateEncoder(lm, template, prompt.verbalizers, prompt_budget=0).encode_prompt(prompt.text.strip())
    )
    if ids == list(prompt.token_ids):
        return None
    return (
        f"re-tokenizing the text {prompt.text!r} for {prompt.model} gives {ids}, not the learned ids "
        f"{list(prompt.token_ids)}: on other models the prompt is what its text says, "
        "not exactly what was learned"
    )


def run_transfer(
    prompt_files: list[Path], models: list[str], tasks: list[str], split: str = "test",
    seed: str = DEFAULT_SEED, limit: int | None = None, progress: bool = True, calibration: str = "batch",
    device: str = "auto", dtype: str = "auto",
) -> dict:  # fmt: skip
    """Evaluate every prompt on every (task, model), raw and calibrated (each prompt's prior re-estimated on
    each target); returns the rows, targets and round-trip notes."""
    prompts = [load_source(path) for path in prompt_files]
    rows = []
    for p in prompts:
        ensemble = f", ensemble of {len(p.ensemble)}" if p.ensemble else ""
        shown = Path(p.model).name if Path(p.model).is_absolute() else p.model  # a directory: its own name
        name = f"{p.method} s{p.seed} ({p.task}, {shown}{ensemble})"
        taken = sum(r.name.split(" #")[0] == name for r in rows)
        text = " + ".join(m["text"].strip() for m in p.ensemble) if p.ensemble else p.text
        rows.append(Row(name if not taken else f"{name} #{taken + 1}", "learned", text, p.model, p.method))
    manual_row, empty_row = Row("manual prompt", "manual", ""), Row("empty prompt", "empty", "")
    targets, templates = [], {}
    loaded = {name: load_task(name, seed) for name in tasks}  # a bad task name fails before any scoring
    for task_name in tasks:
        task = loaded[task_name]
        # On the prompts' own task, the label words they were trained with (a run's task.verbalizers may have
        # replaced the task's); the manual and empty prompts of that column read the same words.
        words = recorded_label_words(prompts, task_name, task.num_classes)
        if words is not None:
            task.verbalizers = words
        examples = sampled_test(task.examples(split), limit)
        manual_row.text = task.manual_prompt if len(tasks) == 1 else "(each task's manual prompt)"
        for model_name in models:
            lm = load_task_model(model_name, device, dtype)
            target = f"{task.name}/{lm.name}"
            targets.append(target)
            kind = lm.kind
            default = Template.parse(task.template_for(kind), kind).text  # one spelling a template
            groups: dict[str, list] = {}  # template -> [(row, its prompts)], one scorer each
            for row, prompt in zip(rows, prompts, strict=True):
                artifact = _weights(prompt)
                if artifact is not None and not same_model(lm.name, prompt.model):
                    row.cells[target] = {
                        "not_applicable": f"{prompt.method} ({artifact.description}) is weights for "
                        f"{prompt.model} (its hidden size and vocabulary); it cannot move to another model"
                    }
                    continue
                if artifact is not None:
                    row.cells[target] = {
                        "not_applicable": "weight artifacts are evaluated with rlprompt.evaluate"
                    }
                    continue
                # On its own task a prompt keeps its own template (an instruction, demonstrations), as the
                # run and evaluate score it; elsewhere the task's template for the target's kind.
                own = own_task(prompt) == task_name
                template = Template.parse(prompt.template_for(kind), kind).text if own else default
                groups.setdefault(template, []).append((row, prompt.members_for(lm.name)))
            # The reference rows read the learned prompts' template where they all share one (the run's
            # own reference rows did), else the task's.
            reference = next(iter(groups)) if len(groups) == 1 else default
            groups.setdefault(reference, []).extend([(manual_row, [task.manual_prompt]), (empty_row, [""])])
            templates[target] = " | ".join(groups)
            if progress:
                count = sum(len(members) for group in groups.values() for _, members in group)
                print(f"{target}: {count} prompts x {len(examples)} {split} examples", flush=True)
            labels = [ex.label for ex in examples]
            scored = []  # (row, result)
            for template, owners in groups.items():
                to_score = [m for _, members in owners for m in members]
                scorer = make_scorer(lm, task, template, prompt_budget=prompt_budget(lm, to_score))
                results = evaluate_prompts(
                    scorer, examples, to_score, progress, task_calibration(calibration, task)
                )
                first = 0
                for row, members in owners:
                    found = results[first : first + len(members)]
                    scored.append((row, found[0] if len(found) == 1 else ensemble_result(found, labels)))
                    first += len(members)
            manual, empty = (r for row, r in scored if row is manual_row or row is empty_row)
            for row, r in scored:
                row.cells[target] = {
                    "accuracy": r.raw.accuracy, "gain": r.raw.accuracy - manual.raw.accuracy,
                    "calibrated": r.metrics.accuracy,
                    "gain_calibrated_manual": r.metrics.accuracy - manual.metrics.accuracy,
                    "gain_calibrated_empty": r.metrics.accuracy - empty.metrics.accuracy,
                }  # fmt: skip
    return {
        "split": split,
        "calibration": calibration,
        "data_seed": seed,
        "tasks": tasks,
        "models": models,
        "targets": targets,
        "templates": templates,
        "rows": [vars(r) for r in [*rows, manual_row, empty_row]],
        "round_trip": {
            row.name: round_trip_problem(p, device, dtype)
            for row, p in zip(rows, prompts, strict=True)
            if _weights(p) is None  # weights have no text to re-tokenize
        },
    }


def write_outputs(result: dict, out_dir: Path) -> list[Path]:
    """transfer.json, transfer.md and transfer.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "transfer.json", out_dir / "transfer.md", out_dir / "transfer.png"]
    atomic_write_bytes(paths[0], (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(paths[1], markdown(result).encode("utf-8"))
    heatmap(result, paths[2])
    return paths


def _cell_text(cell: dict, learned: bool, calibrated: bool) -> str:
    if "not_applicable" in cell:
        return "n/a"
    if not calibrated:
        text = f"{cell['accuracy']:.3f}"
        return f"{text} ({cell['gain']:+.3f})" if learned else text
    text = f"{cell['calibrated']:.3f}"
    if learned:
        text += f" ({cell['gain_calibrated_manual']:+.3f} / {cell['gain_calibrated_empty']:+.3f})"
    return text


def markdown(result: dict) -> str:
    split, method = result["split"], result.get("calibration", "none")
    targets = result["targets"]
    tables = [
        (f"## Raw {split} accuracy (learned prompts: gain over the raw manual prompt)", False),
        (
            f"## {method.capitalize()}-calibrated {split} accuracy (learned prompts: gain over the "
            "calibrated manual prompt / over the calibrated empty prompt)",
            True,
        ),  # fmt: skip
    ]
    scored = "raw" if method == "none" else f"raw and {method}-calibrated"
    lines = [f"# Transfer of learned prompts ({split} accuracy, {scored})", ""]
    if method == "none":
        tables = tables[:1]
    for title, calibrated in tables:
        rows = [[row["name"], f"`{row['text']!r}`",
                 *(_cell_text(row["cells"][t], row["kind"] == "learned", calibrated) for t in targets)]
                for row in result["rows"]]  # fmt: skip
        lines += [title, "", markdown_table(["prompt", "text", *targets], rows), ""]
    reasons = [
        f"- {row['name']} on {t}: {c['not_applicable']}"
        for row in result["rows"]
        for t, c in row["cells"].items()
        if "not_applicable" in c
    ]
    shown = {t: tpl.replace("\n", "\\n") for t, tpl in result["templates"].items()}  # one line each
    lines += ["Templates: " + "; ".join(f"{t}: `{tpl}`" for t, tpl in shown.items())]
    if reasons:
        lines += ["", "Not applicable:", *reasons]
    problems = [f"- {name}: {why}" for name, why in result["round_trip"].items() if why]
    if problems:
        lines += ["", "Text round trip:", *problems]
    return "\n".join(lines) + "\n"


def heatmap(result: dict, path: Path) -> None:
    """Accuracy per prompt and target: raw, and calibrated beside it when the result has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, targets = result["rows"], result["targets"]
    method = result.get("calibration", "none")
    panels = [("accuracy", "raw")] + ([("calibrated", f"{method}-calibrated")] if method != "none" else [])
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * (1.6 + 1.3 * len(targets)) + 1.5, 1.2 + 0.5 * len(rows)),
        squeeze=False,
    )  # fmt: skip
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        values = np.full((len(rows), len(targets)), np.nan)
        for i, row in enumerate(rows):
            for j, t in enumerate(targets):
                values[i, j] = row["cells"][t].get(key, np.nan)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(targets)), [t.replace("/", "\n") for t in targets], fontsize=8)
        first = ax is axes[0][0]  # the panels share their rows: named once, on the left, clear of the cells
        ax.set_yticks(range(len(rows)), [f"{r['name'][:40]}" if first else "" for r in rows], fontsize=8)
        for i in range(len(rows)):
            for j in range(len(targets)):
                text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.3f}"
                color = "white" if np.isnan(values[i, j]) or values[i, j] < 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
        ax.set_title(f"{title} {result['split']} accuracy", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), label=f"{result['split']} accuracy")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlprompt.transfer", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--prompts", nargs="+", required=True,
        help="exported prompt.json files or run directories (a soft prompt's, adapter's or fine-tuned "
        "model's run is listed as not applicable on other models)",
    )  # fmt: skip
    p.add_argument(
        "--models",
        default="smollm2-135m,gemma3-270m,bert-tiny-splade",
        help="comma-separated targets: aliases, local directories, cached HF ids, openai:<URL>[#options]",
    )
    p.add_argument("--task", help="one task (default: the first prompt's task)")
    p.add_argument("--tasks", help="comma-separated tasks (overrides --task)")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"))
    p.add_argument(
        "--seed",
        choices=FEW_SHOT_SEEDS,
        help=f"few-shot data seed (default: the first prompt's, else {DEFAULT_SEED})",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate on N examples of each task, drawn with seed 0 (as task.test_examples)",
    )
    p.add_argument(
        "--calibration", choices=CALIBRATIONS, default="batch",
        help="the calibrated table's method: each prompt's prior re-estimated on each target (default: "
        "%(default)s; see python -m rlprompt.evaluate --help)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="the models' precision (default: %(default)s: bfloat16 on a GPU or a CPU with native bf16, "
        "else float32)",
    )  # fmt: skip
    p.add_argument("--output-dir", default="transfer", help="where the outputs go (default: %(default)s)")
    p.add_argument("--quiet", action="store_true")
    add_verbose_flag(p)
    return p


def model_list(text: str) -> list[str]:
    """``--models``: comma-separated names, where a server model's replicas (``openai:URL,URL#options``) stay
    one name."""
    models: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if piece.startswith(("http://", "https://")) and models and models[-1].startswith("openai:"):
            models[-1] += "," + piece
        elif piece:
            models.append(piece)
    return models


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    files = [Path(p) for p in args.prompts]
    first = load_source(files[0])
    tasks = [  # a task file as runs record it, so a prompt's own task is known as such
        recorded_task_name(t.strip())
        for t in (args.tasks or args.task or first.task_source or first.task).split(",")
        if t.strip()
    ]
    models = model_list(args.models)
    if not models or not tasks:
        raise RLPromptError("give at least one model (--models) and one task (--task/--tasks)")
    if args.limit is not None and args.limit < 1:
        raise RLPromptError(f"--limit must be at least 1, got {args.limit}")
    out_dir = check_output_dir(args.output_dir, "--output-dir")  # before the scoring, not after it
    result = run_transfer(
        files, models, tasks, args.split, args.seed or first.data_seed or DEFAULT_SEED, args.limit,
        not args.quiet, args.calibration,
        args.device, args.dtype,
    )  # fmt: skip
    paths = write_outputs(result, out_dir)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    run_cli(main)
