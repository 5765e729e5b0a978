"""Label scoring, whatever runs the task LM: the score cache, the statistics and the scorer interface.

``LabelScorer.score(prompts, examples)`` returns, for each prompt and example, the log-probability of each
class's verbalizer at the label slot (over the model's whole vocabulary, not renormalised). Every method
scores through it, whichever backend computes the numbers (:mod:`rlprompt.backends`):

* **Reward cache.** Scores are kept per (prompt token ids, example uid); a prompt is never scored twice on
  the same example, and only the missing pairs of a call reach the backend.
* **Statistics.** Pairs scored and LM tokens processed, shared by the scorers of one run, for budgets and
  reports.

A backend subclasses :class:`LabelScorer` and computes the missing pairs (``_compute``): the in-process
Hugging Face scorer (:mod:`rlprompt.backends.hf`, with its prefix key/value cache and packed suffixes) and
the OpenAI-compatible server scorer (:mod:`rlprompt.backends.openai`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlprompt.models import LanguageModel
from rlprompt.tasks import Example
from rlprompt.templates import EncodedExample, Template, TemplateEncoder

PromptLike = str | Sequence[int]


@dataclass
class ScorerStats:
    """Counters for budgets, reports and tests."""

    cache_hits: int = 0
    pairs_scored: int = 0  # (prompt, example) pairs that reached the model
    tokens_processed: int = 0  # real (non-padding) tokens fed to the model
    prefix_hits: int = 0
    prefix_misses: int = 0
    prompt_tokens_reused: int = 0  # prompt tokens whose keys/values came from a kept prompt start


class _LRU(OrderedDict):
    """An OrderedDict bounded by the sum of a size function over its values."""

    def __init__(self, capacity: float, size=lambda value: 1):
        super().__init__()
        self.capacity, self.size, self.used = capacity, size, 0

    def get_fresh(self, key):
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if key in self:
            self.used -= self.size(self.pop(key))
        self[key] = value
        self.used += self.size(value)
        while self.used > self.capacity and len(self) > 1:
            _, old = self.popitem(last=False)
            self.used -= self.size(old)


class LabelScorer:
    """Per-class label log-probabilities for prompts x examples on one task LM (any backend).

    Args:
        lm: the task model (its tokenizer encodes templates, prompts and verbalizers).
        template: template text (see :mod:`rlprompt.templates`).
        verbalizers: one word per class, in label-id order.
        prompt_budget: tokens reserved for the prompt when long sentences are truncated.
        reward_cache_size: most (prompt, example) score entries kept.
        stats: counters to add to (shared by several scorers of one run); a fresh one if None.
    """

    def __init__(
        self,
        lm: LanguageModel,
        template: str,
        verbalizers: Sequence[str],
        *,
        prompt_budget: int = 64,
        reward_cache_size: int = 1_000_000,
        stats: ScorerStats | None = None,
    ):
        self.lm = lm
        self.template = Template.parse(template, lm.kind)
        self.verbalizers = list(verbalizers)
        self.encoder = TemplateEncoder(lm, self.template, self.verbalizers, prompt_budget)
        self.stats = stats if stats is not None else ScorerStats()
        self._scores = _LRU(reward_cache_size)
        self._encoded: dict[str, EncodedExample] = {}

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    def cached_scores(self) -> dict:
        """The score cache, oldest first, as a few arrays: saved in checkpoints, so that a resumed run does
        not score its prompts again. (As tens of thousands of small objects, each checkpoint of the
        quickstart took up to a second and a quarter to pickle.)"""
        keys = list(self._scores)
        uids = list(dict.fromkeys(uid for _, uid in keys))
        of_uid = {uid: i for i, uid in enumerate(uids)}
        lengths = np.array([len(ids) for ids, _ in keys], dtype=np.int64)
        return {
            "uids": uids,
            "example": np.array([of_uid[uid] for _, uid in keys], dtype=np.int64),
            "lengths": lengths,
            "ids": np.fromiter((t for ids, _ in keys for t in ids), dtype=np.int64, count=int(lengths.sum())),
            "values": np.stack(list(self._scores.values()))
            if keys
            else np.zeros((0, self.num_classes), np.float32),
        }

    def load_cached_scores(self, saved: dict | list) -> None:
        if isinstance(saved, list):  # (key, log-probs) pairs: a checkpoint written before the arrays
            for key, value in saved:
                self._scores.put(key, value)
            return
        ids, start = saved["ids"].tolist(), 0
        rows = zip(saved["lengths"].tolist(), saved["example"].tolist(), saved["values"], strict=True)
        for length, example, value in rows:
            self._scores.put((tuple(ids[start : start + length]), saved["uids"][example]), value)
            start += length

    def accepts_input(self, text: str) -> bool:
        """Whether ``text`` can be scored as an input (a causal template needs something before the prompt:
        an empty sentence with ``"{sentence} {prompt}"`` and no BOS token has nothing)."""
        return self.lm.kind != "causal" or bool(self.encoder.encode_example(text).head)

    def prompt_ids(self, prompt: PromptLike) -> tuple[int, ...]:
        """Token ids of a prompt given as text (encoded after the template's lead) or as ids."""
        ids = self.encoder.encode_prompt(prompt) if isinstance(prompt, str) else tuple(int(i) for i in prompt)
        self.encoder.check_prompt(ids)
        return ids

    def score(
        self, prompts: Sequence[PromptLike], examples: Sequence[Example], progress: bool = False
    ) -> np.ndarray:
        """Label log-probs, shape ``(len(prompts), len(examples), num_classes)``, float32."""
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        out = np.empty((len(prompt_ids), len(examples), self.num_classes), dtype=np.float32)
        missing: dict[tuple[tuple[int, ...], str], list[tuple[int, int]]] = {}
        example_by_uid: dict[str, Example] = {}
        for pi, ids in enumerate(prompt_ids):
            for ei, ex in enumerate(examples):
                hit = self._scores.get_fresh((ids, ex.uid))
                if hit is not None:
                    out[pi, ei] = hit
                    self.stats.cache_hits += 1
                else:
                    missing.setdefault((ids, ex.uid), []).append((pi, ei))
                    example_by_uid[ex.uid] = ex
        if missing:
            computed = self._compute(list(missing), example_by_uid, progress)
            self.stats.pairs_scored += len(missing)
            for key, value in computed.items():
                self._scores.put(key, value)
                for pi, ei in missing[key]:
                    out[pi, ei] = value
        return out

    def _compute(self, pairs: list[tuple[tuple[int, ...], str]], example_by_uid: dict[str, Example],
                 progress: bool) -> dict:  # fmt: skip
        """Label log-probs ``(classes,)`` of every (prompt ids, example uid) pair: the backend's job."""
        raise NotImplementedError

    def _encoded_example(self, ex: Example) -> EncodedExample:
        enc = self._encoded.get(ex.uid)
        if enc is None:
            enc = self._encoded[ex.uid] = self.encoder.encode_example(ex.text)
        return enc


def prompt_budget(lm: LanguageModel, prompts: list[PromptLike]) -> int:
    """Tokens to reserve for the longest of ``prompts`` (text prompts get one token of slack for the
    template's lead whitespace), so that long sentences are cut no more than needed."""
    return max(len(p) if not isinstance(p, str) else len(lm.encode(" " + p)) + 1 for p in prompts)
