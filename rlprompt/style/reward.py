"""The style-transfer reward: content preservation and target-style probability, and their joint score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlprompt.style.encoder import SentenceEncoder, StyleClassifier


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
