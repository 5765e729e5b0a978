"""Perplexity on general text: how much a method that changes or wraps the task LM forgets.

Causal LMs: the usual per-token perplexity of each sentence after the model's start token. Masked LMs:
pseudo-perplexity (each token masked in turn and predicted from the rest). A soft prompt is measured as
PEFT applies it, its virtual tokens before the text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.resources import files

import torch

from rlprompt.models import LanguageModel


def heldout_sentences(n: int) -> list[str]:
    """The first ``n`` general held-out sentences shipped with the package (see data/general)."""
    text = files("rlprompt").joinpath("data/general/sst2_heldout.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()][:n]


def perplexity(
    lm: LanguageModel,
    sentences: Sequence[str],
    soft_prompt: torch.Tensor | None = None,
    batch_size: int = 32,
) -> float:
    """Perplexity of ``lm`` (optionally with ``soft_prompt`` embeddings, ``(tokens, hidden)``, before each
    text) on ``sentences``: exp of the mean negative log-likelihood per token."""
    total_nll, total_tokens = 0.0, 0
    was_training = lm.model.training
    lm.model.eval()
    try:
        with torch.inference_mode():
            if lm.kind == "causal":
                sequences = [_causal_ids(lm, s) for s in sentences]
                for start in range(0, len(sequences), batch_size):
                    nll, count = _causal_nll(lm, sequences[start : start + batch_size], soft_prompt)
                    total_nll, total_tokens = total_nll + sum(nll), total_tokens + sum(count)
            else:
                rows = []  # (ids, masked position): one row per token of every sentence
                for s in sentences:
                    ids = list(lm.prefix_ids) + lm.encode(s)[: lm.max_length - 8] + list(lm.suffix_ids)
                    rows += [(ids, p) for p in range(len(lm.prefix_ids), len(ids) - len(lm.suffix_ids))]
                for start in range(0, len(rows), batch_size * 8):
                    nll, count = _masked_nll(lm, rows[start : start + batch_size * 8], soft_prompt)
                    total_nll, total_tokens = total_nll + nll, total_tokens + count
    finally:
        lm.model.train(was_training)
    return math.exp(total_nll / max(total_tokens, 1))


def sentence_perplexities(lm: LanguageModel, sentences: Sequence[str], batch_size: int = 64) -> list[float]:
    """Each sentence's own perplexity under a causal ``lm`` (after its start token): the fluency measure of
    generated rewrites. An empty sentence gets ``inf``."""
    if lm.kind != "causal":
        raise ValueError("sentence perplexities need a causal model")
    out: list[float] = [math.inf] * len(sentences)
    todo = [i for i, s in enumerate(sentences) if s.strip()]
    if hasattr(lm, "token_logprobs"):  # a model behind a server: its echoed log-probs
        rows = [_causal_ids(lm, sentences[i]) for i in todo]
        for i, values in zip(todo, lm.token_logprobs(rows), strict=True):
            out[i] = math.exp(-sum(values) / len(values)) if values else math.inf
        return out
    todo.sort(key=lambda i: len(sentences[i]))  # similar lengths together: little padding
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            nll, count = _causal_nll(lm, [_causal_ids(lm, sentences[i]) for i in chunk], None)
            for i, n, c in zip(chunk, nll, count, strict=True):
                out[i] = math.exp(n / c) if c else math.inf
    return out


def _causal_ids(lm: LanguageModel, sentence: str) -> list[int]:
    start = list(lm.prefix_ids) or ([lm.start_id] if lm.start_id is not None else [])
    return start + lm.encode(sentence)[: lm.max_length - 64]


def _embed_rows(lm: LanguageModel, rows: list[list[int]], soft: torch.Tensor | None, keep_first: int):
    """Right-padded embeddings of ``rows`` with ``soft`` inserted after each row's first ``keep_first``
    tokens (the start token), and the attention mask."""
    device = next(lm.model.parameters()).device
    embed = lm.model.get_input_embeddings()
    n = 0 if soft is None else soft.shape[0]
    width = max(len(r) for r in rows) + n
    pad = embed(torch.tensor([lm.pad_id], device=device))
    out, mask = [], torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        e = embed(torch.tensor(ids, device=device))
        parts = [e[:keep_first]] + ([soft.to(e.dtype)] if n else []) + [e[keep_first:]]
        parts.append(pad.expand(width - len(ids) - n, -1))
        out.append(torch.cat(parts))
        mask[i, : len(ids) + n] = 1
    return torch.stack(out), mask.to(device)


def _causal_nll(
    lm: LanguageModel, rows: list[list[int]], soft: torch.Tensor | None
) -> tuple[list[float], list[int]]:
    """Per row: the summed negative log-likelihood of its tokens and how many there are."""
    keep = 1 if rows[0] and (lm.prefix_ids or lm.start_id is not None) else 0
    inputs, mask = _embed_rows(lm, rows, soft, keep)
    logits = lm.model(inputs_embeds=inputs, attention_mask=mask).logits.float()
    n = 0 if soft is None else soft.shape[0]
    nll, count = [], []
    for i, ids in enumerate(rows):
        # Tokens after the start token (and the soft prompt) are predicted from the position before them.
        targets = torch.tensor(ids[max(keep, 1) :], device=logits.device)
        first = max(keep, 1) + n  # position of the first target in the input
        logprobs = torch.log_softmax(logits[i, first - 1 : first - 1 + len(targets)], -1)
        nll.append(-logprobs.gather(-1, targets[:, None]).sum().item())
        count.append(len(targets))
    return nll, count


def _masked_nll(lm: LanguageModel, rows: list[tuple[list[int], int]], soft: torch.Tensor | None):
    masked = []
    for ids, p in rows:
        ids = list(ids)
        ids[p] = lm.mask_token_id
        masked.append(ids)
    keep = len(lm.prefix_ids)
    inputs, mask = _embed_rows(lm, masked, soft, keep)
    logits = lm.model(inputs_embeds=inputs, attention_mask=mask).logits.float()
    n = 0 if soft is None else soft.shape[0]
    nll = 0.0
    for i, (ids, p) in enumerate(rows):
        at = p + (n if p >= keep else 0)
        nll -= torch.log_softmax(logits[i, at], -1)[ids[p]].item()
    return nll, len(rows)
