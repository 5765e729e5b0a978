"""Would choosing the prompt per input help? TEMPERA edits its prompt for each query; the cheapest form of
that on prompts RL has already learned is dynamic selection: for each test input, weigh a run's prompts by
how well they did on the labelled inputs most like it (Woods et al.'s local accuracy), rather than the same
5 for every input. Reads the scores ``prompt_pool.py --save`` kept for a run's 20 best prompts by dev
(``benchmarks/results/rl_algorithms_sst-2/scores/top20_*.npz``: calibrated label scores on training, dev and
test), places every input in two spaces, ``hidden`` (the task model's mean last-layer hidden state over the
input's tokens) and ``margins`` (the input's 20 calibrated label margins, one a prompt: how the prompts
themselves see it, no label read), each centred on the training and dev inputs at unit length, nearness
being the cosine, and prints, per run and on average, the calibrated test accuracy of:

- ``artifact``: the run's first 5 by dev (the file keeps its ranking), the product's ensemble;
- ``all 20``: the ensemble of every prompt;
- ``SPACE: 16-NN label vote, dev|train+dev``: the majority label of the 16 nearest dev (or training and
  dev) inputs, no prompt: how much the space's neighbours share a label;
- ``SPACE: local top 5, k=K, dev|train+dev``: for each test input, the 5 prompts with the best accuracy
  (ties by log-likelihood of the right label) on its K nearest dev (or training and dev) inputs, as one
  ensemble;
- ``SPACE: local weights, k=K, ...``: all 20 prompts weighted by the softmax of their local log-likelihood
  times 32 (sharp enough for a prompt that is locally right to dominate one that is locally unsure);
- ``fitted weights, lambda=L, dev|train+dev``: not per input, but the ensemble's combination learned: an
  L2-penalised logistic regression (penalty L) of the label on the 20 prompts' standardised margins, fitted
  on dev (or training and dev) inputs (stacking, the learned form of "other ways to combine");
- ``per-input oracle``: the input counts as right when any of the 20 prompts gets it (an upper bound for
  any per-input choice among them).

Training inputs are the ones RL's reward read, so their accuracies flatter every prompt; dev inputs alone
are the unbiased neighbours. Look at development splits with it, not at the split of the final table.

    .venv/bin/python benchmarks/input_dependent.py SCORES.npz [SCORES.npz ...]

The file name gives the data split (``top20_16-13_s0.npz``: SST-2, split 16-13). Measured:
benchmarks/results/rl_algorithms_sst-2/NOTES.md ("Choosing the prompt per input").
"""

from __future__ import annotations

import re
import sys

import numpy as np
import torch
from finished_runs import load_scores

from rlprompt.evaluation import ensemble_scores
from rlprompt.models import load_model
from rlprompt.tasks import load_task

NEIGHBOURS = (8, 16, 32)
MEMBERS = 5
SHARPNESS = 32.0
PENALTIES = (1.0, 0.1, 0.01)


def embed(lm, texts: list[str], batch: int = 32) -> np.ndarray:
    """Mean last-layer hidden state of each text's tokens (no prompt, no template)."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            ids = [lm.encode(t) for t in texts[start : start + batch]]
            width = max(len(i) for i in ids)
            input_ids = torch.tensor([i + [lm.pad_id] * (width - len(i)) for i in ids])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
            hidden = lm.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            last = hidden.hidden_states[-1].float()
            rows.append(((last * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy())
    return np.concatenate(rows)


_EMBEDDED: dict[tuple[str, str], np.ndarray] = {}  # (data split, task split) -> vectors: seeds share them


def _embedded(lm, split: str, part: str, texts: list[str]) -> np.ndarray:
    if (split, part) not in _EMBEDDED:
        _EMBEDDED[split, part] = embed(lm, texts)
    return _EMBEDDED[split, part].copy()


def right_loglik(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-input log-probability of the right label, renormalised over the classes: (prompts, inputs)."""
    top = scores.max(-1, keepdims=True)
    norm = scores - top - np.log(np.exp(scores - top).sum(-1, keepdims=True))
    return np.take_along_axis(norm, labels[None, :, None], -1)[..., 0]


def local_rules(test_scores, ref_scores, ref_labels, similarity, k: int):
    """Test predictions of the two local rules for one neighbour set: (local top 5, local weights)."""
    correct = (ref_scores.argmax(-1) == ref_labels[None]).astype(float)  # (prompts, refs)
    ll = right_loglik(ref_scores, ref_labels)
    nearest = np.argsort(-similarity, axis=1)[:, :k]  # (tests, k)
    local_acc = correct[:, nearest].mean(-1).T  # (tests, prompts)
    local_ll = ll[:, nearest].mean(-1).T
    rank = local_acc + 1e-3 * (local_ll - local_ll.min())  # accuracy first, log-likelihood breaks ties
    top = np.argsort(-rank, axis=1)[:, :MEMBERS]
    picked = np.take_along_axis(test_scores.transpose(1, 0, 2), top[..., None], 1).mean(1)
    weights = np.exp(SHARPNESS * (local_ll - local_ll.max(1, keepdims=True)))
    weights /= weights.sum(1, keepdims=True)
    weighted = np.einsum("tp,ptc->tc", weights, test_scores)
    return picked.argmax(-1), weighted.argmax(-1)


def fitted_weights(ref_margins, ref_labels, test_margins, penalty: float, steps: int = 3000):
    """Test predictions of a logistic regression of the (binary) label on the prompts' margins: (inputs,
    prompts) arrays, features standardised on the reference inputs, plain gradient descent on the mean
    log-loss plus ``penalty`` times half the squared weights (convex: it converges from zero)."""
    centre, scale = ref_margins.mean(0), ref_margins.std(0) + 1e-6
    x = (ref_margins - centre) / scale
    weights, bias = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        error = 1 / (1 + np.exp(-(x @ weights + bias))) - ref_labels
        weights -= 0.1 * (x.T @ error / len(error) + penalty * weights)
        bias -= 0.1 * error.mean()
    return (((test_margins - centre) / scale) @ weights + bias > 0).astype(int)


def unit(vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each split's vectors centred on the training and dev inputs' mean, at unit length (for cosine)."""
    centre = np.concatenate([vectors["train"], vectors["dev"]]).mean(0)
    out = {s: v - centre for s, v in vectors.items()}
    return {s: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9) for s, v in out.items()}


def run(path: str, lm) -> dict[str, float]:
    texts, scores, labels = load_scores(path)
    split = re.search(r"_(\d+-\d+)_", path).group(1)
    task = load_task("sst-2", split)
    examples = {s: task.examples(s) for s in ("train", "dev", "test")}
    for s, exs in examples.items():
        if not np.array_equal([ex.label for ex in exs], labels[s]):
            sys.exit(f"{path}: the {s} labels are not those of sst-2 {split}")
    arrays = {s: np.stack(scores[s]) for s in scores}  # (prompts, inputs, classes)
    vectors = {s: _embedded(lm, split, s, [ex.text for ex in examples[s]]) for s in examples}
    # The prompts' own view of an input: its 20 label margins (labels unread), as a second input space.
    profiles = {s: (arrays[s][..., 1] - arrays[s][..., 0]).T for s in arrays}
    spaces = {"hidden": unit(vectors), "margins": unit(profiles)}
    test_labels = labels["test"]

    def acc(predictions) -> float:
        return float((predictions == test_labels).mean())

    first = list(range(MEMBERS))  # the file keeps the run's own ranking (top_k_prompts), best first
    out = {
        "artifact": acc(ensemble_scores([arrays["test"][p] for p in first]).argmax(-1)),
        "all 20": acc(ensemble_scores(list(arrays["test"])).argmax(-1)),
    }
    for space, vecs in spaces.items():
        for name, refs in (("dev", ("dev",)), ("train+dev", ("train", "dev"))):
            ref_scores = np.concatenate([arrays[s] for s in refs], 1)
            ref_labels = np.concatenate([labels[s] for s in refs])
            similarity = vecs["test"] @ np.concatenate([vecs[s] for s in refs]).T
            nearest_labels = ref_labels[np.argsort(-similarity, axis=1)[:, :16]]
            out[f"{space}: 16-NN label vote, {name}"] = acc((nearest_labels.mean(1) > 0.5).astype(int))
            for k in NEIGHBOURS:
                if k >= len(ref_labels):  # every reference input: the same prompts for every test input
                    continue
                top5, weighted = local_rules(arrays["test"], ref_scores, ref_labels, similarity, k)
                out[f"{space}: local top 5, k={k}, {name}"] = acc(top5)
                out[f"{space}: local weights, k={k}, {name}"] = acc(weighted)
    if arrays["test"].shape[-1] == 2:  # two classes: one margin a prompt
        for name, refs in (("dev", ("dev",)), ("train+dev", ("train", "dev"))):
            ref_margins = np.concatenate([profiles[s] for s in refs])
            ref_labels = np.concatenate([labels[s] for s in refs])
            for penalty in PENALTIES if name == "train+dev" else (0.1,):
                predictions = fitted_weights(ref_margins, ref_labels, profiles["test"], penalty)
                out[f"fitted weights, lambda={penalty:g}, {name}"] = acc(predictions)
    out["per-input oracle"] = float((arrays["test"].argmax(-1) == test_labels[None]).any(0).mean())
    return out


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: .venv/bin/python benchmarks/input_dependent.py SCORES.npz [SCORES.npz ...]")
    torch.manual_seed(0)
    lm = load_model("smollm2-135m", "cpu", "auto")  # bf16 where the CPU has it natively, else float32
    lm.model.eval()
    print(f"hidden states: smollm2-135m in {lm.dtype}", flush=True)
    results = {}
    for path in paths:
        results[path] = run(path, lm)
        shown = {k: v for k, v in results[path].items() if k in ("artifact", "all 20")}
        print(path, "  ".join(f"{k}: {v:.3f}" for k, v in shown.items()), flush=True)
    names = list(next(iter(results.values())))
    base = np.array([results[p]["artifact"] for p in paths])
    runs = " ".join(f"{p.rsplit('/', 1)[-1][6:-4]:>9s}" for p in paths)  # top20_16-13_s0.npz -> 16-13_s0
    print(f"\n{'rule':46s} {runs}      mean  Δ vs artifact")
    for name in names:
        values = np.array([results[p][name] for p in paths])
        delta = 100 * (values - base)
        print(f"{name:46s} " + " ".join(f"{v:9.3f}" for v in values)
              + f"  {values.mean():8.3f}  {delta.mean():+.1f} ± {delta.std(ddof=1) / np.sqrt(len(delta)):.1f}"
              f" (ahead on {(delta > 0).sum()} of {len(delta)})")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
