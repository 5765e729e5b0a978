"""Rewriting with a frozen causal LM: RLPrompt's template, sampled or greedy, stopped at the closing quote."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from rlprompt.errors import RLPromptError

if TYPE_CHECKING:
    from rlprompt.style.reward import StyleReward

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

    def _row(self, prompt_ids: tuple[int, ...], sentence: str) -> list[int]:
        """The model's start tokens (if any), then RLPrompt's template: the prompt, the quoted input, and an
        open quote for the rewrite; refused where it and the new tokens would not fit the model."""
        row = list(self.lm.prefix_ids) + list(prompt_ids)
        row += self.lm.encode(('"' if not prompt_ids else ' "') + sentence + '" "')
        if len(row) + self.max_new_tokens > self.lm.max_length:
            short = sentence if len(sentence) <= 40 else sentence[:40] + "..."
            raise RLPromptError(
                f"the sentence {short!r} takes {len(row)} tokens with the prompt, and with "
                f"{self.max_new_tokens} new ones exceeds {self.lm.name}'s {self.lm.max_length} positions"
            )
        return row

    def check_fits(self, prompt: str | tuple[int, ...], sentences: list[str]) -> None:
        """Refuse, before anything is generated, a sentence too long for the model (see :meth:`_row`)."""
        ids = self.prompt_ids(prompt)
        for sentence in sentences:
            self._row(ids, sentence)

    def rewrite(self, prompt: str | tuple[int, ...], sentences: list[str], samples: int = 1,
                greedy: bool = False, seed: int = 0) -> list[list[str]]:  # fmt: skip
        """``samples`` rewrites of each sentence (greedy: one, deterministic)."""
        return self.rewrite_pairs([(prompt, s) for s in sentences], samples, greedy, seed)

    def rewrite_pairs(self, pairs: list[tuple[str | tuple[int, ...], str]], samples: int = 1,
                      greedy: bool = False, seed: int = 0) -> list[list[str]]:  # fmt: skip
        """Rewrites of each (prompt, sentence) pair; one generate call per ``batch_size`` sequences.
        Sampling is seeded by ``seed`` and leaves the caller's torch random state alone."""
        n = 1 if greedy else samples
        rows = [self._row(self.prompt_ids(prompt), sentence) for prompt, sentence in pairs]
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


EVALUATION_CHUNK = 64  # sentences rewritten per call in evaluation, each call seeded by its first index


def evaluation_rewrites(
    rewriter: Rewriter, reward: StyleReward | None, prompt: str | tuple[int, ...], sentences: list[str],
    samples: int, seed: int, bar=None,
) -> list[str]:  # fmt: skip
    """One rewrite per sentence with the evaluation decoding: greedy (``samples`` 1), or the best of
    ``samples`` sampled rewrites by ``reward``'s joint score. Calls of :data:`EVALUATION_CHUNK` sentences,
    each seeded by ``seed`` plus its first sentence's index: the same sentences and seed give the same
    rewrites, in a run's test or from its prompt file (``LearnedPrompt.rewrite``). ``bar``: a progress bar
    (tqdm) advanced by each call's sentences."""
    rewriter.check_fits(prompt, sentences)  # a long sentence late in the list: said now, not after hours
    out: list[str] = []
    for start in range(0, len(sentences), EVALUATION_CHUNK):
        part = sentences[start : start + EVALUATION_CHUNK]
        outs = rewriter.rewrite(prompt, part, samples, greedy=samples == 1, seed=seed + start)
        if samples == 1:
            out += [o[0] for o in outs]
        else:
            flat_in = [x for x, o in zip(part, outs, strict=True) for _ in o]
            joint = reward.scores(flat_in, [r for o in outs for r in o]).joint
            out += [o[int(np.argmax(joint[i * samples : (i + 1) * samples]))] for i, o in enumerate(outs)]
        if bar is not None:
            bar.update(len(part))
    return out


class _StopAtTokens:
    """A per-sequence stopping criterion: a sequence is done once its last token is one of ``ids``."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.ids)
