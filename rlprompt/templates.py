"""Templates: how a sentence, a prompt and the label slot become one token sequence.

A template is text with the slots ``{sentence}``, ``{prompt}`` and ``<mask>`` (the label slot), for
example ``"{sentence} {prompt} <mask> ."``. Masked LMs predict the label word at ``<mask>``; causal
LMs predict it as the next token, so their label slot must end the template (a causal template
without ``<mask>`` gets ``" <mask>"`` appended, RLPrompt's ``"{sentence} {prompt}"`` convention).

Each slot is tokenized together with the literal text just before it, so a leading space stays
attached to the word that follows it, as BPE and SentencePiece tokenizers expect. Tokenizing slot
by slot is what lets the scorer reuse a sentence's key/value cache for every prompt. Where slots meet
at whitespace (as in every default template) this gives exactly the tokens of the whole text; a slot
glued to punctuation (``'"{sentence}"'``) may tokenize slightly differently at that boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rlprompt.errors import RLPromptError
from rlprompt.models import LanguageModel, ModelKind

SENTENCE, PROMPT, LABEL = "{sentence}", "{prompt}", "<mask>"
_SLOT_RE = re.compile(r"(\{sentence\}|\{prompt\}|<mask>)")
_STRAY_BRACE_RE = re.compile(r"\{[^}]*\}")

DEFAULT_TEMPLATES: dict[ModelKind, str] = {
    "causal": "{sentence} {prompt}",
    "masked": "{sentence} {prompt} <mask> .",
}


@dataclass(frozen=True)
class Chunk:
    """One slot (or the trailing literal) with the literal text that precedes it."""

    slot: str | None  # SENTENCE, PROMPT, LABEL, or None for trailing literal text
    lead: str


@dataclass(frozen=True)
class Template:
    """A validated template for one model kind."""

    text: str
    kind: ModelKind
    chunks: tuple[Chunk, ...]

    @classmethod
    def parse(cls, text: str, kind: ModelKind) -> Template:
        """Validate ``text`` for a model of ``kind``; errors name the template and what is wrong."""
        if not isinstance(text, str):
            raise RLPromptError(f"template must be a string, got {text!r}")
        pieces = _SLOT_RE.split(text)
        slots = [p for p in pieces if _SLOT_RE.fullmatch(p)]
        for slot in (SENTENCE, PROMPT):
            if slots.count(slot) != 1:
                raise RLPromptError(f"template {text!r} must contain {slot} exactly once")
        if slots.count(LABEL) > 1:
            raise RLPromptError(f"template {text!r} has more than one {LABEL} label slot")
        for literal in pieces[::2]:
            stray = _STRAY_BRACE_RE.search(literal)
            if stray:
                raise RLPromptError(
                    f"template {text!r} has an unknown slot {stray.group()}; "
                    f"the slots are {SENTENCE}, {PROMPT} and {LABEL}"
                )
        if kind == "masked" and LABEL not in slots:
            raise RLPromptError(f"template {text!r} for a masked model needs a {LABEL} label slot")
        if kind == "causal":
            if LABEL not in slots:
                return cls.parse(text.rstrip() + " " + LABEL, kind)
            if pieces[-1].strip() or pieces[-2] != LABEL:
                raise RLPromptError(
                    f"template {text!r}: a causal model predicts the label as the next token, "
                    f"so {LABEL} must end the template"
                )
        chunks = []
        for i in range(1, len(pieces), 2):
            chunks.append(Chunk(slot=pieces[i], lead=pieces[i - 1]))
        if pieces[-1]:
            chunks.append(Chunk(slot=None, lead=pieces[-1]))
        return cls(text=text, kind=kind, chunks=tuple(chunks))

    def _lead(self, slot: str) -> tuple[str, str]:
        """The literal text before ``slot``, split into its text and its trailing whitespace."""
        lead = next(c.lead for c in self.chunks if c.slot == slot)
        text = lead.rstrip()
        return text, lead[len(text) :]

    @property
    def prompt_lead(self) -> str:
        """Literal text before the prompt (without trailing whitespace): part of the context."""
        return self._lead(PROMPT)[0]

    @property
    def prompt_space(self) -> str:
        """Whitespace before the prompt: text prompts are tokenized with it (" It was")."""
        return self._lead(PROMPT)[1]

    @property
    def label_lead(self) -> str:
        """Literal text before the label slot (without trailing whitespace): part of the context."""
        return self._lead(LABEL)[0]

    @property
    def label_space(self) -> str:
        """Whitespace before the label slot: label words are tokenized with it (" great")."""
        return self._lead(LABEL)[1]

    def fill_text(self, sentence: str, prompt: str, label: str) -> str:
        """The plain text of a filled template (``label`` replaces the label slot)."""
        values = {SENTENCE: sentence, PROMPT: prompt, LABEL: label, None: ""}
        return "".join(c.lead + values[c.slot] for c in self.chunks)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one example around the prompt.

    ``head`` is everything before the prompt, ``tail`` everything after it (for causal models up to,
    not including, the label slot). For masked models the mask lies in the head (``label_in_head``) or
    in the tail, counted from the end of the sequence (``label_from_end``) so it does not depend on the
    prompt.
    """

    head: tuple[int, ...]
    tail: tuple[int, ...]
    label_from_end: int | None = None  # masked models: position of the mask counted from the end
    label_in_head: int | None = None  # masked models: position of the mask when it lies in the head


class TemplateEncoder:
    """Encodes examples, prompts and verbalizers for one model and template."""

    def __init__(
        self, lm: LanguageModel, template: Template, verbalizers: list[str], prompt_budget: int = 64
    ):
        if template.kind != lm.kind:
            raise RLPromptError(
                f"template {template.text!r} is for a {template.kind} model, {lm.name} is {lm.kind}"
            )
        self.lm = lm
        self.template = template
        self.prompt_budget = prompt_budget
        self.verbalizer_ids = [tuple(lm.encode(template.label_space + word)) for word in verbalizers]
        for word, ids in zip(verbalizers, self.verbalizer_ids, strict=True):
            if not ids:
                raise RLPromptError(f"verbalizer {word!r} encodes to no token for {lm.name}")
            if lm.kind == "masked" and len(ids) != 1:
                pieces = lm.tokenizer.convert_ids_to_tokens(list(ids))
                raise RLPromptError(
                    f"verbalizer {word!r} is {len(ids)} tokens for masked model {lm.name} ({pieces}); "
                    "a masked model fills one position, so each verbalizer must be a single token"
                )
        if len(set(self.verbalizer_ids)) != len(self.verbalizer_ids):
            raise RLPromptError(f"verbalizers {verbalizers} are not distinct once tokenized for {lm.name}")
        # Literal pieces never change: tokenize them once. The prompt slot contributes its literal text
        # (e.g. "Review:"), the prompt being tokenized with only the whitespace before it. A causal model's
        # label slot contributes the text before it (e.g. " Answer:"); the label word is what is predicted.
        self._tokens = len(lm.tokenizer)  # a prompt's ids must be below it (check_prompt)
        self._special_texts = [t for t in getattr(lm.tokenizer, "all_special_tokens", []) if t]
        self._literal_ids = {}
        for i, c in enumerate(template.chunks):
            if c.slot == PROMPT:
                text = template.prompt_lead
            elif c.slot == LABEL:
                text = c.lead + lm.mask_token if lm.kind == "masked" else template.label_lead
            elif c.slot is None:
                text = c.lead
            else:
                continue
            self._literal_ids[i] = tuple(lm.encode(text)) if text else ()
        self._mask_index = {}
        for i, ids in self._literal_ids.items():
            if template.chunks[i].slot == LABEL and lm.kind == "masked":
                if ids.count(lm.mask_token_id) != 1:
                    raise RLPromptError(
                        f"{lm.name}: the mask token does not survive tokenization of {template.text!r}"
                    )
                self._mask_index[i] = ids.index(lm.mask_token_id)
        # Checked here, before any run writes anything: what the template and the prompt leave for sentences.
        # The text just before the sentence (demonstrations, an instruction) is tokenized with it; it counts
        # as fixed too, so that cutting a long input to fit cuts the sentence, never that text.
        sentence_lead = next(c.lead for c in template.chunks if c.slot == SENTENCE)
        self._sentence_lead = len(lm.encode(sentence_lead)) if sentence_lead else 0
        fixed = len(lm.prefix_ids) + self._sentence_lead + sum(len(ids) for ids in self._literal_ids.values())
        if lm.kind == "masked":
            fixed += len(lm.suffix_ids)
        else:  # the label's tokens but the last, and maybe a start token
            fixed += max(len(v) for v in self.verbalizer_ids) - 1 + (0 if lm.prefix_ids else 1)
        self._sentence_room = lm.max_length - fixed - self.prompt_budget
        if fixed >= lm.max_length:
            raise RLPromptError(
                f"template {_shown(template.text)} is too long for {lm.name}: its own text takes {fixed} of "
                f"the {lm.max_length} tokens it reads, leaving none for the sentence and the prompt "
                "(shorten the template, or show fewer demonstrations: in_context.k, task.demonstrations)"
            )
        if self._sentence_room < 1:
            raise RLPromptError(
                f"a {self.prompt_budget}-token prompt is too long for {lm.name}: with template "
                f"{_shown(template.text)} ({fixed} tokens of its own) it leaves no room for the sentence "
                f"within {lm.max_length} tokens (shorten the prompt: env.prompt_length, "
                "soft_prompt.num_virtual_tokens or the manual prompt; or the template)"
            )

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        """Token ids of a text prompt, with the template's lead text (usually a space) attached."""
        return tuple(self.lm.encode(self.template.prompt_space + prompt)) if prompt else ()

    def check_prompt(self, prompt_ids: tuple[int, ...]) -> None:
        unknown = [i for i in prompt_ids if not 0 <= i < self._tokens]
        if unknown:  # (a prompt file's ids for another tokenizer, or edited)
            raise RLPromptError(
                f"prompt token id {unknown[0]} is not a token of {self.lm.name} ({self._tokens} tokens)"
            )
        if len(prompt_ids) > self.prompt_budget:
            raise RLPromptError(
                f"prompt of {len(prompt_ids)} tokens is longer than the {self.prompt_budget} tokens "
                "the scorer reserves for prompts (prompt_budget)"
            )

    def encode_example(self, sentence: str) -> EncodedExample:
        """Encode the template around the prompt; long sentences are cut from their end to fit."""
        lm, chunks = self.lm, self.template.chunks
        sentence_index = next(i for i, c in enumerate(chunks) if c.slot == SENTENCE)
        prompt_index = next(i for i, c in enumerate(chunks) if c.slot == PROMPT)
        # the lead's tokens and what is left for the sentence
        room = self._sentence_lead + self._sentence_room
        lead = chunks[sentence_index].lead
        if any(token in sentence for token in self._special_texts):
            # Input text is text: a review that says "[SEP]" or "<|endoftext|>" gets those characters, not
            # the model's special token (which would end it, or add a second mask).
            literal = lm.tokenizer(sentence, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            sentence_ids = [*(lm.encode(lead) if lead else []), *literal][:room]
        else:
            sentence_ids = lm.encode(lead + sentence)[:room]
        head: list[int] = list(lm.prefix_ids)
        tail: list[int] = []
        label_in_head = label_pos_in_tail = None
        for i in range(len(chunks)):
            ids = sentence_ids if i == sentence_index else self._literal_ids[i]
            target = head if i <= prompt_index else tail
            if i in self._mask_index:
                if target is head:
                    label_in_head = len(head) + self._mask_index[i]
                else:
                    label_pos_in_tail = len(tail) + self._mask_index[i]
            target.extend(ids)
        if lm.kind == "masked":
            tail.extend(lm.suffix_ids)
        elif not head and lm.start_id is not None:
            # Nothing precedes the prompt (say "{prompt} {sentence}", or an empty sentence) and the model
            # adds no BOS: start from its BOS/EOS token, as GPT-style models conventionally do.
            head.append(lm.start_id)
        label_from_end = len(tail) - label_pos_in_tail if label_pos_in_tail is not None else None
        return EncodedExample(
            head=tuple(head), tail=tuple(tail), label_from_end=label_from_end, label_in_head=label_in_head
        )


def _shown(text: str, limit: int = 80) -> str:
    """A template in an error message: whole when short, else its start and length (demonstrations can run
    to thousands of characters)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def in_context_template(
    base: str, kind: str, train, verbalizers: list[str], prompt: str, k: int, separator: str, seed: int
) -> str:
    """``base`` preceded by ``k`` demonstrations from ``train`` (:func:`draw_demonstrations`), each filled
    into ``base`` with ``prompt`` and its label word."""
    return demonstrations_template(base, kind, draw_demonstrations(train, k, seed), verbalizers, prompt,
                                   separator)  # fmt: skip


def demonstrations_template(base: str, kind: str, shown, verbalizers: list[str], prompt: str,
                            separator: str) -> str:  # fmt: skip
    """``base`` preceded by the examples ``shown``, in that order, each filled into ``base`` with
    ``prompt`` and its label word."""
    parsed = Template.parse(base, kind)
    demos = [parsed.fill_text(ex.text, prompt, verbalizers[ex.label]) for ex in shown]
    # Demonstrations are literal text: braces and the mask token must not read as template slots.
    text = separator.join(d.replace("{", "(").replace("}", ")").replace("<mask>", "mask") for d in demos)
    return text + separator + base


def draw_demonstrations(train, k: int, seed: int) -> list:
    """``k`` examples of ``train``, balanced over classes, drawn and ordered by ``seed``."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for ex in train:
        by_class.setdefault(ex.label, []).append(ex)
    classes = sorted(by_class)
    chosen = []
    for i in range(k):  # round-robin over classes: balanced
        pool = by_class[classes[i % len(classes)]]
        remaining = [ex for ex in pool if ex not in chosen]
        if remaining:
            chosen.append(remaining[int(rng.integers(len(remaining)))])
    return [chosen[i] for i in rng.permutation(len(chosen))]
