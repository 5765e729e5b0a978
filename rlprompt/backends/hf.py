"""The in-process Hugging Face backend's scorer: label log-probs from a model in this process (any device
and dtype), plus the differentiable forward passes of the gradient methods.

How it stays fast on a CPU:

* **Prefix key/value cache (causal LMs).** Everything before the prompt (the sentence, with the
  default template) is the same for every prompt. Its keys/values are computed once per example,
  kept in a size-bounded LRU, and reused: each prompt then costs only its own few tokens.
* **Packed suffixes (causal LMs).** All of an example's prompts are packed into one sequence behind its
  cached prefix, with a block attention mask that keeps each prompt to the prefix and itself: the
  prefix is never copied per prompt, and no compute goes to padding between prompts.
* **Kept prompt starts (causal LMs).** A policy that has settled writes new prompts that differ from
  ones it already scored in a token or two. The keys/values of each scored prompt's tokens but the last
  are kept per example (a size-bounded LRU), and a new prompt that starts like a kept one computes only
  what comes after the shared start (its queries attend to the sentence, the kept keys and themselves).
* **A shared start computed once (causal LMs).** When every head to compute starts with the same
  tokens (in-context demonstrations, an instruction before the sentence), their keys/values are computed
  once and each head continues from them.
* **Soft-prompt populations packed (causal LMs).** :meth:`Scorer.evaluate_soft_prompts` packs many soft
  prompts behind each cached sentence prefix, as discrete prompts are (black-box tuning's generations).
* **Batching.** All missing (prompt, example) pairs of a call go through the model in batches bounded
  by a token budget, with explicit position ids so padding never shifts positions.
* **Only the logits needed**: the output layer runs at the label positions only.

Multi-token verbalizers (causal LMs only) score as the sum of their tokens' log-probs. The reward cache and
the statistics are the backend-neutral :class:`rlprompt.scoring.LabelScorer`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from rlprompt.compat import returned_cache, with_cache
from rlprompt.errors import RLPromptError
from rlprompt.models import LanguageModel
from rlprompt.scoring import _LRU, LabelScorer, ScorerStats
from rlprompt.tasks import Example
from rlprompt.templates import EncodedExample

# A start all heads share that is shorter than this is not worth a forward pass of its own (and, computed
# with each sentence as before, keeps the usual templates' numbers as they were).
SHARED_HEAD_MIN = 8


def _kv_bytes(kv) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


class Scorer(LabelScorer):
    """Per-class label log-probabilities for prompts x examples on one frozen in-process model.

    Args:
        lm: the frozen task model.
        template: template text (see :mod:`rlprompt.templates`).
        verbalizers: one word per class, in label-id order.
        batch_tokens: rough cap on tokens (padding included) per forward pass.
        prompt_budget: tokens reserved for the prompt when long sentences are truncated.
        reward_cache_size: most (prompt, example) score entries kept.
        prefix_cache_mb: memory for cached sentence key/values (causal LMs).
        prompt_prefix_cache_mb: memory for the kept key/values of scored prompts' starts (causal LMs); 0
            turns their reuse off. Starts are kept only on examples scored in an earlier call (training
            examples, scored again and again): a set scored once (a test set) would only evict them.
        prefix_group: examples whose prefixes are stacked together for one round of suffix batches.
        stats: counters to add to (shared by several scorers of one run); a fresh one if None.
        prefix_model: a PEFT prefix-tuning model over ``lm.model`` (causal LMs): its learned keys and
            values precede every input in every layer. Only the differentiable path (:meth:`label_logprobs`,
            :meth:`evaluate_logprobs`) applies them; no sentence prefix can be reused under them.
    """

    def __init__(
        self,
        lm: LanguageModel,
        template: str,
        verbalizers: Sequence[str],
        *,
        batch_tokens: int = 4096,
        prompt_budget: int = 64,
        reward_cache_size: int = 1_000_000,
        prefix_cache_mb: float = 512,
        prompt_prefix_cache_mb: float = 256,
        prefix_group: int = 64,
        stats: ScorerStats | None = None,
        prefix_model=None,
    ):
        super().__init__(
            lm, template, verbalizers, prompt_budget=prompt_budget, reward_cache_size=reward_cache_size,
            stats=stats,
        )  # fmt: skip
        self.batch_tokens = batch_tokens
        self.prefix_group = prefix_group
        self.prefix_model = prefix_model
        self._prefix_kv = _LRU(prefix_cache_mb * 2**20, size=lambda entry: _kv_bytes(entry.kv))
        # (uid, prompt start) -> (keys, values), each (layers, heads, tokens, dim): those of a scored prompt's
        # tokens but the last, on that example; _start_of maps each shorter start to the entry holding it.
        # One tensor over all layers: a pass keeps hundreds of starts, and a copy per layer was slow.
        self._prompt_kv = _LRU(prompt_prefix_cache_mb * 2**20, size=lambda kv: sum(t.nbytes for t in kv))
        self._start_of: dict[tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]] = {}
        self._layers_stack = False  # whether the model's layers' keys/values stack (checked on first keep)
        self._device = next(lm.model.parameters()).device
        vids = self.encoder.verbalizer_ids
        self._single = [c for c, ids in enumerate(vids) if len(ids) == 1]
        self._multi = [c for c, ids in enumerate(vids) if len(ids) > 1]
        self._single_ids = torch.tensor([vids[c][0] for c in self._single], dtype=torch.long)
        self._first_ids = torch.tensor([ids[0] for ids in vids], dtype=torch.long)
        self._output_embeddings = lm.model.get_output_embeddings() if lm.kind == "causal" else None
        self._dtype = next(lm.model.parameters()).dtype
        self._blocks: dict[int, torch.Tensor] = {}
        self.segment_tokens = max(1, batch_tokens // 8)  # most suffix tokens packed behind one prefix
        self._shared: tuple | None = None  # see _shared_lead

    # -- differentiable scoring (soft prompts, LoRA, fine-tuning) ------------------------------------

    def label_logprobs(
        self,
        examples: Sequence[Example],
        prompt_ids: Sequence[int] = (),
        prompt_embeds: torch.Tensor | None = None,
        reuse_prefix: bool = True,
    ) -> torch.Tensor:
        """Per-class label log-probs ``(len(examples), num_classes)`` as a tensor that carries gradients
        to ``prompt_embeds`` (a soft prompt, ``(tokens, hidden)``, placed at the ``{prompt}`` slot) and to
        any trainable model weights. Nothing is cached but the sentence prefixes (``reuse_prefix``, causal
        LMs): those are computed without gradients, so turn it off when the model's weights are trained.
        Same numbers as :meth:`score` for the same discrete prompt (a test checks it)."""
        if self._multi:
            words = [self.verbalizers[c] for c in self._multi]
            raise RLPromptError(
                f"verbalizers {words} are several tokens for {self.lm.name}; gradient-trained methods "
                "(soft_prompt, lora, full_finetune) need single-token verbalizers"
            )
        embed = self.lm.model.get_input_embeddings()
        if prompt_embeds is None:
            ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=self._device)
            prompt_embeds = embed(ids)
        self.encoder.check_prompt(tuple(range(prompt_embeds.shape[0])))
        encoded = [self._encoded_example(ex) for ex in examples]
        causal = self.lm.kind == "causal"
        reuse_prefix = reuse_prefix and self.prefix_model is None  # learned keys/values come first
        if causal and reuse_prefix and prompt_embeds.shape[0] + min(len(e.tail) for e in encoded) > 0:
            return self._logprobs_after_prefix(examples, encoded, prompt_embeds)
        inputs, mask, label_pos = self.embedded_inputs(encoded, prompt_embeds)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.arange(len(encoded), device=self._device)
        self.stats.tokens_processed += int(mask.sum())
        if causal:
            body, extra = self.lm.model.base_model, {}
            if self.prefix_model is not None:
                n = self.prefix_model.active_peft_config.num_virtual_tokens
                cache = self.prefix_model.get_prompt(len(encoded), max_cache_len=mask.shape[1] + n)
                mask = torch.cat([mask.new_ones(len(encoded), n), mask], dim=1)
                positions, extra = positions + n, with_cache(body, cache)
            hidden = body(
                inputs_embeds=inputs, attention_mask=mask, position_ids=positions, **extra
            ).last_hidden_state
            logits = self._lm_head(hidden[rows, label_pos])
        else:
            logits = self.lm.model(inputs_embeds=inputs, attention_mask=mask).logits[rows, label_pos].float()
        return torch.log_softmax(logits, dim=-1)[:, self._single_ids.to(self._device)]

    def embedded_inputs(
        self, encoded: Sequence[EncodedExample], prompt_embeds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded input embeddings ``head + prompt + tail`` per example, their attention mask and
        the position each label is read from (the mask token for masked LMs, the last token for causal
        LMs). A soft prompt shifts everything after it, the mask included."""
        embed = self.lm.model.get_input_embeddings()
        prompt_embeds = prompt_embeds.to(embed.weight.dtype)
        lengths = [len(e.head) + prompt_embeds.shape[0] + len(e.tail) for e in encoded]
        width = max(lengths)
        pad = embed(torch.tensor([self.lm.pad_id], device=self._device))
        rows, label_pos = [], []
        for e, length in zip(encoded, lengths, strict=True):
            head = embed(torch.tensor(e.head, dtype=torch.long, device=self._device))
            tail = embed(torch.tensor(e.tail, dtype=torch.long, device=self._device))
            rows.append(torch.cat([head, prompt_embeds, tail, pad.expand(width - length, -1)]))
            if self.lm.kind == "causal":
                label_pos.append(length - 1)
            elif e.label_in_head is not None:
                label_pos.append(e.label_in_head)
            else:
                label_pos.append(length - e.label_from_end)
        mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
        return torch.stack(rows), mask.to(self._device), torch.tensor(label_pos, device=self._device)

    def _logprobs_after_prefix(self, examples, encoded, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Causal LMs: the prompt and tail run over each example's cached sentence prefix."""
        from transformers import DynamicCache

        with torch.no_grad():
            prefix = self._stacked_prefix(list(examples))
        rows = torch.tensor([prefix.index[ex.uid] for ex in examples], dtype=torch.long)
        n = prompt_embeds.shape[0]
        lengths = [n + len(e.tail) for e in encoded]
        width = max(lengths)
        ids = torch.full((len(encoded), width), self.lm.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            if e.tail:
                ids[i, n : lengths[i]] = torch.tensor(e.tail, dtype=torch.long)
            suffix_mask[i, : lengths[i]] = 1
        inputs = self.lm.model.get_input_embeddings()(ids.to(self._device))
        if n:
            inputs = torch.cat(
                [prompt_embeds.to(inputs.dtype).expand(len(encoded), -1, -1), inputs[:, n:]], 1
            )
        mask = torch.cat([prefix.mask[rows], suffix_mask], dim=1)
        positions = prefix.lengths[rows][:, None] + torch.arange(width)[None]
        past = DynamicCache(ddp_cache_data=[(k[rows], v[rows]) for k, v in prefix.keys_values])
        base = self.lm.model.base_model
        hidden = base(
            inputs_embeds=inputs,
            attention_mask=mask.to(self._device),
            position_ids=positions.to(self._device),
            **with_cache(base, past),
        ).last_hidden_state
        self.stats.tokens_processed += int(suffix_mask.sum())
        last = torch.tensor(lengths, device=self._device) - 1
        logits = self._lm_head(hidden[torch.arange(len(encoded), device=self._device), last])
        return torch.log_softmax(logits, dim=-1)[:, self._single_ids.to(self._device)]

    def evaluate_logprobs(
        self,
        examples: Sequence[Example],
        prompt_embeds: torch.Tensor | None = None,
        reuse_prefix: bool = True,
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """:meth:`label_logprobs` over many examples, without gradients: ``(examples, classes)``."""
        order = sorted(range(len(examples)), key=lambda i: len(self._encoded_example(examples[i]).head))
        out = np.empty((len(examples), self.num_classes), dtype=np.float32)
        bar = tqdm(total=len(examples), desc="scoring", unit="ex", disable=not progress, leave=False)
        with torch.inference_mode():
            embeds = None if prompt_embeds is None else prompt_embeds.detach()
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                lp = self.label_logprobs([examples[i] for i in chosen], (), embeds, reuse_prefix)
                out[chosen] = lp.float().cpu().numpy()
                bar.update(len(chosen))
        bar.close()
        return out

    def evaluate_soft_prompts(
        self, examples: Sequence[Example], prompts: torch.Tensor, progress: bool = False
    ) -> np.ndarray:
        """:meth:`evaluate_logprobs` for several soft prompts ``(prompts, tokens, hidden)`` at once:
        ``(prompts, examples, classes)``, without gradients. On a causal LM each example's sentence
        prefix is computed once and all prompts' suffixes are packed behind it (as for discrete prompts),
        so a population of candidates costs about what its suffix tokens cost; otherwise one
        :meth:`evaluate_logprobs` per prompt. Same numbers within float tolerance (a test checks it)."""
        prompts = prompts.detach()
        packable = self.lm.kind == "causal" and self.prefix_model is None and not self._multi
        every_head = all(self._encoded_example(ex).head for ex in examples)
        if not packable or not every_head or prompts.shape[1] == 0:
            return np.stack([self.evaluate_logprobs(examples, p, progress=progress) for p in prompts])
        out = np.empty((len(prompts), len(examples), self.num_classes), dtype=np.float32)
        bar = tqdm(total=len(examples) * len(prompts), desc="scoring", unit="pair", disable=not progress,
                   leave=False)  # fmt: skip
        embed = self.lm.model.get_input_embeddings()
        n = prompts.shape[1]
        with torch.inference_mode():
            prompts = prompts.to(device=self._device, dtype=embed.weight.dtype)
            for start in range(0, len(examples), self.prefix_group):
                group = list(examples[start : start + self.prefix_group])
                prefix = self._stacked_prefix(group)
                # A segment is one example's tail after each of a run of prompts, packed in one row.
                segments = []
                for i, ex in enumerate(group):
                    tail = self._encoded_example(ex).tail
                    per = max(1, self.segment_tokens // (n + len(tail)))
                    for first in range(0, len(prompts), per):
                        chosen = range(first, min(first + per, len(prompts)))
                        segments.append((start + i, ex.uid, tail, chosen))
                segments.sort(key=lambda seg: len(seg[3]) * (n + len(seg[2])))
                share = prefix.width // 4
                cost = lambda seg, share=share: len(seg[3]) * (n + len(seg[2])) + share  # noqa: E731
                for batch in _batches(segments, cost, self.batch_tokens):
                    pieces = [[(n + len(tail))] * len(chosen) for _, _, tail, chosen in batch]
                    rows = torch.tensor([prefix.index[uid] for _, uid, _, _ in batch], dtype=torch.long)
                    positions, mask, ends = self._packed_layout(prefix, rows, pieces)
                    inputs = embed.weight.new_zeros((len(batch), positions.shape[1], embed.weight.shape[1]))
                    for b, (_, _, tail, chosen) in enumerate(batch):
                        tail_embeds = embed(torch.tensor(tail, dtype=torch.long, device=self._device))
                        block = torch.cat([prompts[list(chosen)], tail_embeds.expand(len(chosen), -1, -1)], 1)
                        inputs[b, : block.shape[0] * block.shape[1]] = block.reshape(-1, block.shape[-1])
                    hidden, _ = self._run_over_prefix(prefix, rows, positions, mask, inputs_embeds=inputs)
                    index = torch.tensor(ends, dtype=torch.long)
                    logits = self._lm_head(hidden[index[:, 0], index[:, 1]])
                    logprobs = torch.log_softmax(logits, dim=-1)[:, self._single_ids.to(self._device)]
                    logprobs = logprobs.cpu().numpy()
                    at = 0
                    for example, _, _, chosen in batch:
                        out[list(chosen), example] = logprobs[at : at + len(chosen)]
                        at += len(chosen)
                    self.stats.tokens_processed += sum(map(sum, pieces))
                    bar.update(sum(len(seg[3]) for seg in batch))
        bar.close()
        return out

    # -- internals ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def _compute(self, pairs, example_by_uid, progress) -> dict:
        if self.prefix_model is not None:  # the cached path knows no learned prefix: never score without it
            raise RuntimeError("a prefix-tuned scorer scores through evaluate_logprobs / label_logprobs")
        bar = tqdm(total=len(pairs), desc="scoring", unit="pair", disable=not progress, leave=False)
        try:
            if self.lm.kind == "causal":
                return self._compute_causal(pairs, example_by_uid, bar)
            return self._compute_masked(pairs, example_by_uid, bar)
        finally:
            bar.close()

    def _compute_masked(self, pairs, example_by_uid, bar) -> dict:
        rows = []
        for ids, uid in pairs:
            enc = self._encoded_example(example_by_uid[uid])
            seq = enc.head + ids + enc.tail
            label_pos = enc.label_in_head if enc.label_in_head is not None else len(seq) - enc.label_from_end
            rows.append(((ids, uid), seq, label_pos))
        rows.sort(key=lambda r: len(r[1]))  # less padding
        single_ids = self._single_ids.to(self._device)
        results = {}
        for batch in _batches(rows, lambda r: len(r[1]), self.batch_tokens):
            width = max(len(r[1]) for r in batch)
            input_ids = torch.full((len(batch), width), self.lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (_, seq, _) in enumerate(batch):
                input_ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
            logits = self.lm.model(
                input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device)
            ).logits
            positions = torch.tensor([r[2] for r in batch], device=self._device)
            label_logits = logits[torch.arange(len(batch), device=self._device), positions].float()
            logprobs = torch.log_softmax(label_logits, dim=-1)[:, single_ids].cpu().numpy()
            for (key, _, _), lp in zip(batch, logprobs, strict=True):
                results[key] = lp
            self.stats.tokens_processed += int(mask.sum())
            bar.update(len(batch))
        return results

    def _compute_causal(self, pairs, example_by_uid, bar) -> dict:
        vids = self.encoder.verbalizer_ids
        # One row scores all single-token verbalizers at once; each multi-token verbalizer needs a row
        # of its own that carries all but its last token.
        extensions: list[tuple[int | None, tuple[int, ...]]] = [(None, ())] if self._single else []
        extensions += [(c, vids[c][:-1]) for c in self._multi]
        rows_by_uid: dict[str, list[_CausalRow]] = {}
        # Examples whose head is cached were scored before: only their prompt starts are worth keeping,
        # by one row per (prompt, example), the single-token row, else the first multi-token one.
        repeated = (
            {uid for _, uid in pairs if uid in self._prefix_kv} if self._prompt_kv.capacity > 0 else set()
        )
        for ids, uid in pairs:
            enc = self._encoded_example(example_by_uid[uid])
            if not enc.head:
                raise RLPromptError(
                    f"template {self.template.text!r}: nothing comes before the prompt for {self.lm.name}; "
                    "a causal template needs text (or a BOS token) before {prompt}"
                )
            for cls, ext in extensions:
                keeps = uid in repeated and cls == extensions[0][0]
                row = _CausalRow(uid, ids, cls, ids + enc.tail + ext, keeps=keeps)
                rows_by_uid.setdefault(uid, []).append(self._with_kept_start(row))
        results: dict[tuple[tuple[int, ...], str], np.ndarray] = {}

        def collect(rows, logprobs) -> None:
            done = 0
            for row, lp in zip(rows, logprobs, strict=True):
                scores = results.setdefault((row.prompt, row.uid), np.zeros(self.num_classes, np.float32))
                if row.cls is None:
                    scores[self._single] = lp
                else:
                    scores[row.cls] = lp
                done += row.cls == extensions[0][0]
            bar.update(done)

        uids = list(rows_by_uid)
        for start in range(0, len(uids), self.prefix_group):
            group = uids[start : start + self.prefix_group]
            prefix = self._stacked_prefix([example_by_uid[u] for u in group])
            # A row with nothing after the head (empty prompt and tail) needs no forward pass at all.
            empty = [r for u in group for r in rows_by_uid[u] if not r.suffix]
            collect(empty, [self._row_logprobs(r, prefix, None) for r in empty])
            # All of an example's suffixes are packed into one sequence after its prefix (split when longer
            # than the token budget); a block mask keeps each suffix to the prefix and itself.
            segments = []
            for uid in group:
                segment: list[_CausalRow] = []
                for row in (r for r in rows_by_uid[uid] if r.suffix):
                    if segment and _suffix_tokens(segment) + row.computed > self.segment_tokens:
                        segments.append(segment)
                        segment = []
                    segment.append(row)
                if segment:
                    segments.append(segment)
            segments.sort(key=_suffix_tokens)
            share = prefix.width // 4  # attending over the padded prefix costs a little too
            cost = lambda seg, share=share: _suffix_tokens(seg) + share  # noqa: E731
            for batch in _batches(segments, cost, self.batch_tokens):
                rows = [r for seg in batch for r in seg]
                collect(rows, self._forward_packed(batch, prefix))
        return results

    def _stacked_prefix(self, examples: list[Example]) -> _StackedPrefix:
        """Key/values of every example's head, left-padded into one batch, with the log-probs of each
        verbalizer's first token right after the head (what an empty prompt would predict)."""
        from transformers import DynamicCache

        heads = {ex.uid: self._encoded_example(ex).head for ex in examples}
        entries = {ex.uid: self._prefix_kv.get_fresh(ex.uid) for ex in examples}
        # Similar lengths share a batch, so little compute goes to left padding.
        todo = sorted((ex for ex in examples if entries[ex.uid] is None), key=lambda ex: len(heads[ex.uid]))
        self.stats.prefix_hits += len(entries) - len(todo)
        self.stats.prefix_misses += len(todo)
        shared, shared_kv = self._shared_lead([heads[ex.uid] for ex in todo])
        for batch in _batches(todo, lambda ex: len(heads[ex.uid]), self.batch_tokens, max_padding=0.25):
            # The template's fixed start (in-context demonstrations, an instruction) is computed once; the
            # causal model's keys/values for its first tokens do not depend on what follows (exact).
            lead = max(0, min(shared, min(len(heads[ex.uid]) for ex in batch) - 1))
            rests = [heads[ex.uid][lead:] for ex in batch]
            width = max(map(len, rests))
            input_ids = torch.full((len(batch), width), self.lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, rest in enumerate(rests):
                input_ids[i, width - len(rest) :] = torch.tensor(rest)
                mask[i, width - len(rest) :] = 1
            # Explicit positions: left padding must not shift the real tokens' positions.
            positions = lead + (mask.cumsum(-1) - 1).clamp(min=0)
            self.stats.tokens_processed += int(mask.sum())
            base, extra = self.lm.model.base_model, {"use_cache": True}
            if lead > 0:
                rows = (len(batch), -1, -1, -1)
                past = DynamicCache(
                    ddp_cache_data=[
                        (k[None, :, :lead].expand(rows), v[None, :, :lead].expand(rows)) for k, v in shared_kv
                    ]
                )
                mask = torch.cat([mask.new_ones(len(batch), lead), mask], dim=1)
                extra = with_cache(base, past)
            out = base(
                input_ids=input_ids.to(self._device),
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                **extra,
            )
            layers = [(layer[0], layer[1]) for layer in returned_cache(out)]
            last = torch.log_softmax(self._lm_head(out.last_hidden_state[:, -1]), dim=-1)
            first = last[:, self._first_ids.to(self._device)].cpu()
            for i, (ex, rest) in enumerate(zip(batch, rests, strict=True)):
                start = lead + width - len(rest)  # the example's own tokens after the padding
                kv = [(_own(k[i], lead, start), _own(v[i], lead, start)) for k, v in layers]
                entries[ex.uid] = _Prefix(kv, first[i])
                self._prefix_kv.put(ex.uid, entries[ex.uid])
        return _StackedPrefix.build(
            [ex.uid for ex in examples], entries, [len(heads[ex.uid]) for ex in examples]
        )

    def _shared_lead(self, heads: list[tuple[int, ...]]) -> tuple[int, list | None]:
        """How many first tokens all ``heads`` share (in-context demonstrations, an instruction), with
        the keys/values of at least those tokens, when there are ``SHARED_HEAD_MIN`` or more; else
        ``(0, None)``. One set of keys/values is kept and reused while the heads keep sharing them."""
        # Each head keeps at least its last token to compute (its first-token log-probs come from it).
        common = os.path.commonprefix(heads)[: min(map(len, heads)) - 1] if heads else ()
        ids, kv = self._shared if self._shared is not None else ((), None)
        lead = len(os.path.commonprefix([ids, common]))
        if lead < SHARED_HEAD_MIN:
            if len(heads) < 2 or len(common) < SHARED_HEAD_MIN:  # a lone head shares with nothing new
                return 0, None
            out = self.lm.model.base_model(
                input_ids=torch.tensor([common], device=self._device), use_cache=True
            )
            self.stats.tokens_processed += len(common)
            kv = [(layer[0][0], layer[1][0]) for layer in returned_cache(out)]
            self._shared, lead = (tuple(common), kv), len(common)
        return lead, kv

    def _forward_packed(self, segments: list[list[_CausalRow]], prefix: _StackedPrefix) -> list:
        """Run packed suffixes over their example's cached prefix (and, for a row with a kept start, over
        that start's keys/values); per row, the single-token verbalizers' log-probs (an extension row:
        the summed log-prob of its verbalizer)."""
        example_rows = torch.tensor([prefix.index[seg[0].uid] for seg in segments], dtype=torch.long)
        lengths = [[r.computed for r in seg] for seg in segments]
        # Each row's kept starts sit between its prefix and its suffixes, each once however many use it.
        starts: list[dict] = []
        for seg in segments:
            at: dict = {}
            for r in seg:
                if r.skip and (r.kept, r.skip) not in at:
                    at[(r.kept, r.skip)] = (sum(n for _, n in at), r.kept_kv)
            starts.append(at)
        spans = [[(starts[i][(r.kept, r.skip)][0], r.skip) if r.skip else (0, 0) for r in seg]
                 for i, seg in enumerate(segments)]  # fmt: skip
        kept_width = max((sum(n for _, n in at) for at in starts), default=0)
        positions, mask, _ = self._packed_layout(prefix, example_rows, lengths, spans, kept_width)
        input_ids = torch.full(positions.shape, self.lm.pad_id, dtype=torch.long)
        needed: list[tuple[int, int]] = []  # (row, column) of every position whose logits are read
        reads_at = []
        for i, seg in enumerate(segments):
            col = 0
            for row in seg:
                m = row.computed
                input_ids[i, col : col + m] = torch.tensor(row.suffix[row.skip :])
                reads = min(m, self._reads(row))
                reads_at.append((len(needed), reads))
                needed.extend((i, col + m - reads + j) for j in range(reads))
                col += m
        kept_kv = self._kept_section(starts, kept_width) if kept_width else None
        keep = any(r.keeps for seg in segments for r in seg)
        hidden, cache = self._run_over_prefix(
            prefix, example_rows, positions, mask, kept_kv, keep_cache=keep, input_ids=input_ids
        )
        self.stats.tokens_processed += sum(map(_suffix_tokens, segments))
        self.stats.prompt_tokens_reused += sum(r.skip for seg in segments for r in seg)
        if cache is not None:
            self._keep_starts(segments, cache, prefix.width + kept_width)
        index = torch.tensor(needed, dtype=torch.long)
        hidden = hidden[index[:, 0], index[:, 1]]
        logprobs = torch.log_softmax(self._lm_head(hidden), dim=-1)
        rows = [r for seg in segments for r in seg]
        return [
            self._row_logprobs(row, prefix, logprobs[at : at + k])
            for row, (at, k) in zip(rows, reads_at, strict=True)
        ]

    # -- kept prompt starts -------------------------------------------------------------------------

    def _kept_length(self, row: _CausalRow) -> int:
        """How many of a row's prompt tokens may come from a kept start: never the positions whose
        logits are read (those must be computed)."""
        return max(0, min(len(row.prompt), len(row.suffix) - self._reads(row)))

    def _with_kept_start(self, row: _CausalRow) -> _CausalRow:
        """``row`` set to continue from the longest kept start of its prompt on its example, if any."""
        for j in range(self._kept_length(row), 0, -1):
            key = self._start_of.get((row.uid, row.prompt[:j]))
            if key is None:
                continue
            if self._prompt_kv.get_fresh(key) is None:  # evicted since
                del self._start_of[(row.uid, row.prompt[:j])]
                continue
            kv = self._prompt_kv[key]  # held by the row: later batches of this call may evict the entry
            return replace(row, kept=key, skip=j, kept_kv=kv)
        return row

    def _kept_section(self, starts: list[dict], width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the kept starts' keys and values laid out per packed row ``(rows, heads, width,
        dim)`` (zeros where a row has fewer; the mask hides them)."""
        k0, v0 = next(kv for at in starts for kv in at.values())[1]
        layers, heads, _, dim = k0.shape
        k = k0.new_zeros((layers, len(starts), heads, width, dim))
        v = v0.new_zeros((layers, len(starts), v0.shape[1], width, v0.shape[3]))
        for i, at in enumerate(starts):
            for (_, n), (offset, (kk, vv)) in at.items():
                k[:, i, :, offset : offset + n] = kk[:, :, :n]
                v[:, i, :, offset : offset + n] = vv[:, :, :n]
        return list(zip(k.unbind(0), v.unbind(0), strict=True))

    def _keep_starts(self, segments, cache, suffix_from: int) -> None:
        """Keep the keys/values of each freshly scored prompt's tokens but the last, per repeatedly scored
        example, from the cache of the forward pass that scored it (``suffix_from``: where the packed
        suffixes begin)."""
        kept = []  # (row, where its tokens begin among those gathered, the start's length)
        rows, cols = [], []
        for i, seg in enumerate(segments):
            col = 0
            for row in seg:
                n = self._kept_length(row) if row.keeps else 0
                n = min(n, len(row.prompt) - 1)  # a start another prompt of this length can share
                if n > row.skip:
                    kept.append((row, len(cols), n))
                    rows.extend([i] * (n - row.skip))
                    cols.extend(range(suffix_from + col, suffix_from + col + n - row.skip))
                col += row.computed
        if not kept:
            return
        layers = [(layer[0], layer[1]) for layer in cache]
        if not self._layers_stack:
            if len({(k.shape[1], k.shape[3], v.shape[1], v.shape[3]) for k, v in layers}) > 1:
                # Layers of unlike shapes do not stack into one tensor: this model keeps no starts.
                self._prompt_kv.capacity = 0
                self._prompt_kv.clear()
                self._start_of.clear()
                return
            self._layers_stack = True
        # Every kept token of every layer gathered at once: (layers, heads, tokens, dim).
        rows, cols = torch.tensor(rows, device=self._device), torch.tensor(cols, device=self._device)
        k0, v0 = layers[0]
        keys = k0.new_empty((len(layers), len(rows), k0.shape[1], k0.shape[3]))
        values = v0.new_empty((len(layers), len(rows), v0.shape[1], v0.shape[3]))
        for layer, (k, v) in enumerate(layers):
            keys[layer], values[layer] = k[rows, :, cols], v[rows, :, cols]
        keys, values = keys.transpose(1, 2), values.transpose(1, 2)
        for row, at, n in kept:
            own = (keys[:, :, at : at + n - row.skip], values[:, :, at : at + n - row.skip])
            if row.skip:
                kk, vv = row.kept_kv
                own = (
                    torch.cat([kk[:, :, : row.skip], own[0]], 2),
                    torch.cat([vv[:, :, : row.skip], own[1]], 2),
                )
            else:
                own = tuple(t.clone(memory_format=torch.contiguous_format) for t in own)
            key = (row.uid, row.prompt[:n])
            self._prompt_kv.put(key, own)
            for j in range(1, n + 1):
                self._start_of[(row.uid, row.prompt[:j])] = key
        if len(self._start_of) > 16 * (len(self._prompt_kv) + 64):  # drop what points at evicted entries
            self._start_of = {s: key for s, key in self._start_of.items() if key in self._prompt_kv}

    def _packed_layout(
        self, prefix: _StackedPrefix, example_rows: torch.Tensor, pieces: list[list[int]],
        spans: list[list[tuple[int, int]]] | None = None, kept_width: int = 0,
    ):  # fmt: skip
        """Positions and attention mask for rows that each pack several suffixes (``pieces[i]``: their
        lengths) behind example ``example_rows[i]``'s cached prefix: each suffix sees the prefix, its
        kept start if any (``spans[i]``: (offset, length) in a section of ``kept_width`` keys after the
        prefix) and itself, causally. Also the (row, column) of each suffix's last token."""
        n, head_width = len(pieces), prefix.width
        width = max(sum(p) for p in pieces)
        suffix_from = head_width + kept_width
        positions = torch.zeros((n, width), dtype=torch.long)
        # allowed[i, q, k]: may query q of row i attend to key k (prefix keys, kept starts, then suffixes)?
        allowed = torch.zeros((n, width, suffix_from + width), dtype=torch.bool)
        allowed[:, :, :head_width] = prefix.mask[example_rows].bool()[:, None, :]
        allowed[:, torch.arange(width), suffix_from + torch.arange(width)] = True  # padding attends to itself
        ends = []
        for i, lengths in enumerate(pieces):
            col, start = 0, int(prefix.lengths[example_rows[i]])
            for p, m in enumerate(lengths):
                offset, kept = spans[i][p] if spans is not None else (0, 0)
                positions[i, col : col + m] = torch.arange(start + kept, start + kept + m)
                if kept:
                    allowed[i, col : col + m, head_width + offset : head_width + offset + kept] = True
                allowed[i, col : col + m, suffix_from + col : suffix_from + col + m] = self._causal_block(m)
                col += m
                ends.append((i, col - 1))
        if self.lm.model.config._attn_implementation == "sdpa":
            mask = allowed[:, None]
        else:  # eager attention adds the mask to the scores
            mask = torch.zeros(allowed.shape, dtype=self._dtype).masked_fill(
                ~allowed, torch.finfo(self._dtype).min
            )
            mask = mask[:, None]
        return positions, mask, ends

    def _run_over_prefix(self, prefix: _StackedPrefix, example_rows, positions, mask, kept_kv=None,
                         keep_cache: bool = False, **inputs):  # fmt: skip
        """The base model's last hidden states for packed rows (``input_ids`` or ``inputs_embeds``) over
        their examples' cached prefixes (then ``kept_kv``, kept prompt starts, if given), and with
        ``keep_cache`` the key/value cache of the pass (prefix, kept starts, then the rows' own)."""
        from transformers import DynamicCache

        layers = [(k[example_rows], v[example_rows]) for k, v in prefix.keys_values]
        if kept_kv is not None:
            layers = [
                (torch.cat([k, kk], 2), torch.cat([v, vv], 2))
                for (k, v), (kk, vv) in zip(layers, kept_kv, strict=True)
            ]
        # No config: plain layers that never crop to a sliding window (sequences fit in it: see max_length).
        past = DynamicCache(ddp_cache_data=layers)
        base = self.lm.model.base_model
        inputs = {key: value.to(self._device) for key, value in inputs.items()}
        out = base(
            attention_mask=mask.to(self._device),
            position_ids=positions.to(self._device),
            **inputs,
            **with_cache(base, past),
        )
        return out.last_hidden_state, (returned_cache(out) if keep_cache else None)

    def _reads(self, row: _CausalRow) -> int:
        """How many final positions of a row predict label tokens."""
        return 1 if row.cls is None else len(self.encoder.verbalizer_ids[row.cls])

    def _causal_block(self, m: int) -> torch.Tensor:
        block = self._blocks.get(m)
        if block is None:
            block = self._blocks[m] = torch.ones((m, m), dtype=torch.bool).tril()
        return block

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of selected positions (rows, dim) -> (rows, vocab), with the final soft-capping some
        models apply in their forward. Only these positions go through the (large) output layer."""
        logits = self._output_embeddings(hidden.contiguous()).float()
        cap = getattr(self.lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _row_logprobs(self, row: _CausalRow, prefix: _StackedPrefix, logprobs: torch.Tensor | None):
        """A row's result from the log-probs of its last positions (``logprobs``: (reads, vocab)); a
        prediction that falls before the suffix (an empty prompt) comes from the prefix's cache."""
        after_head = prefix.first_logprobs[prefix.index[row.uid]]
        if row.cls is None:
            if not row.suffix:
                return after_head[self._single].numpy()
            return logprobs[-1, self._single_ids.to(self._device)].cpu().numpy()
        target = self.encoder.verbalizer_ids[row.cls]
        from_suffix = min(len(target), len(row.suffix))
        total = 0.0
        if from_suffix:
            ids = torch.tensor(target[len(target) - from_suffix :], device=self._device)
            total = logprobs[-from_suffix:].gather(-1, ids[:, None]).sum().item()
        if from_suffix < len(target):
            total += float(after_head[row.cls])
        return total


@dataclass(frozen=True)
class _Prefix:
    """What is cached per example for causal LMs: its head's key/values and first-token log-probs."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (heads, length, dim)
    first_logprobs: torch.Tensor  # (classes,)


@dataclass(frozen=True)
class _CausalRow:
    """One causal-LM row: a prompt on an example, scoring all single-token verbalizers (cls None) or
    one multi-token verbalizer (whose tokens but the last end the suffix)."""

    uid: str
    prompt: tuple[int, ...]
    cls: int | None
    suffix: tuple[int, ...]  # everything after the example's head
    keeps: bool = False  # its pass keeps its prompt's start (one row per pair on a repeatedly scored example)
    kept: tuple[str, tuple[int, ...]] | None = None  # the kept prompt start it continues from
    skip: int = 0  # how many first suffix tokens that start supplies
    kept_kv: tuple | None = field(default=None, compare=False, repr=False)  # its (keys, values), all layers

    @property
    def computed(self) -> int:
        return len(self.suffix) - self.skip


@dataclass
class _StackedPrefix:
    """Per-example prefix key/values left-padded to one width, for one group of examples."""

    index: dict[str, int]  # example uid -> row in the stacked tensors
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (examples, heads, width, dim)
    mask: torch.Tensor  # (examples, width) attention mask of the padded prefix
    lengths: torch.Tensor  # real prefix length per example: the next position id
    width: int
    first_logprobs: torch.Tensor  # (examples, classes): each verbalizer's first token right after the head

    @classmethod
    def build(cls, uids: list[str], entries: dict, lengths: list[int]) -> _StackedPrefix:
        width = max(lengths)
        mask = torch.zeros((len(uids), width), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, width - n :] = 1
        keys_values = []
        first = entries[uids[0]].kv
        for layer, (k0, v0) in enumerate(first):
            k = k0.new_zeros((len(uids), k0.shape[0], width, k0.shape[2]))
            v = v0.new_zeros((len(uids), v0.shape[0], width, v0.shape[2]))
            for i, uid in enumerate(uids):
                ek, ev = entries[uid].kv[layer]
                k[i, :, width - ek.shape[1] :] = ek
                v[i, :, width - ev.shape[1] :] = ev
            keys_values.append((k, v))
        index = {uid: i for i, uid in enumerate(uids)}
        first_logprobs = torch.stack([entries[uid].first_logprobs for uid in uids])
        return cls(index, keys_values, mask, torch.tensor(lengths, dtype=torch.long), width, first_logprobs)


def _own(layer: torch.Tensor, lead: int, start: int) -> torch.Tensor:
    """One example's keys (or values) ``(heads, length, dim)``: the shared lead, then its own tokens from
    ``start`` on (what lies between is left padding)."""
    return torch.cat([layer[:, :lead], layer[:, start:]], 1)


def _suffix_tokens(segment: list[_CausalRow]) -> int:
    """Tokens a packed segment computes."""
    return sum(r.computed for r in segment)


def _batches(items: list, cost, budget: int, max_padding: float = float("inf")):
    """Split ``items`` (in order; sort them by cost first) into batches whose padded cost stays within
    ``budget`` and whose padding is at most ``max_padding`` of the real cost."""
    batch: list = []
    widest = real = 0
    for item in items:
        c = cost(item)
        wide = max(widest, c)
        if batch and (
            wide * (len(batch) + 1) > budget or wide * (len(batch) + 1) > (1 + max_padding) * (real + c)
        ):
            yield batch
            batch, widest, real = [], 0, 0
        batch.append(item)
        widest = max(widest, c)
        real += c
    if batch:
        yield batch


def load(name: str, device: str = "auto", dtype: str = "auto") -> LanguageModel:
    """The backend's loader: a frozen in-process model (see :func:`rlprompt.models.load_model`)."""
    from rlprompt.models import load_model

    return load_model(name, device, dtype)


SCORER = Scorer
