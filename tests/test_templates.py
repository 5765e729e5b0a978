"""Template parsing and slot-by-slot encoding."""

from __future__ import annotations

import pytest

from rlprompt.errors import RLPromptError
from rlprompt.templates import Template, TemplateEncoder

SENTENCE = "it 's a charming and often affecting journey ."


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("{prompt} <mask>", "masked", r"must contain \{sentence\} exactly once"),
        ("{sentence} <mask>", "masked", r"must contain \{prompt\} exactly once"),
        ("{sentence} {prompt} {prompt} <mask>", "masked", r"\{prompt\} exactly once"),
        ("{sentence} {prompt} <mask> <mask>", "masked", "more than one <mask>"),
        ("{sentence} {prompt} .", "masked", "needs a <mask> label slot"),
        ("<mask> {prompt} {sentence}", "causal", "<mask> must end the template"),
        ("{sentence} {prompt} <mask> .", "causal", "<mask> must end the template"),
        ("{sentence} {prompt} {label} <mask>", "masked", r"unknown slot \{label\}"),
        ("{Sentence} {prompt} <mask>", "masked", r"\{sentence\} exactly once"),
    ],
)
def test_bad_templates_are_clear_errors(text, kind, message):
    with pytest.raises(RLPromptError, match=message):
        Template.parse(text, kind)


def test_causal_template_gets_its_label_slot_at_the_end():
    t = Template.parse("{sentence} {prompt}", "causal")
    assert t.text == "{sentence} {prompt} <mask>"
    assert (t.prompt_lead, t.prompt_space, t.label_lead, t.label_space) == ("", " ", "", " ")
    t = Template.parse("Review: {sentence}\nHint: {prompt} Answer: <mask>", "causal")
    assert (t.prompt_lead, t.prompt_space, t.label_lead, t.label_space) == ("\nHint:", " ", " Answer:", " ")


@pytest.mark.real_model
def test_slot_encoding_equals_whole_text_tokenization(smol, bert):
    """Tokenizing slot by slot (what makes prefix caching possible) gives the tokens of the whole text."""
    cases = [(smol, "{sentence} {prompt}"), (smol, "Review: {sentence} Hint: {prompt} Answer: <mask>"),
             (smol, "Prompt: {prompt} Review: {sentence} Sentiment: <mask>"),
             (bert, "{sentence} {prompt} <mask> ."), (bert, "<mask> {prompt} {sentence}")]  # fmt: skip
    for lm, text in cases:
        template = Template.parse(text, lm.kind)
        encoder = TemplateEncoder(lm, template, ["terrible", "great"])
        enc = encoder.encode_example(SENTENCE)
        prompt = encoder.encode_prompt("All in all, it was")
        label = "great" if lm.kind == "causal" else lm.mask_token
        whole = lm.tokenizer(template.fill_text(SENTENCE, "All in all, it was", label))["input_ids"]
        ours = list(enc.head + prompt + enc.tail)
        if lm.kind == "causal":
            ours += list(encoder.verbalizer_ids[1])
        assert ours == list(whole), text


@pytest.mark.real_model
def test_a_long_input_is_cut_in_its_sentence_and_a_template_that_fills_the_model_is_refused(tiny_gpt2):
    """Text before {sentence} is tokenized with the sentence; a long sentence is cut from its end, leaving
    that text whole and the input still inside the model's 64 positions. A template whose own text leaves no
    room is an error, not inputs that all read the same."""
    lead = "Read this review and judge it:"
    encoder = TemplateEncoder(
        tiny_gpt2,
        Template.parse(lead + " {sentence} {prompt} <mask>", "causal"),
        ["terrible", "great"],
        prompt_budget=5,
    )
    words = " ".join(f"word{i}" for i in range(200))
    heads = {encoder.encode_example(f"{first} {words}").head for first in ("good", "bad")}
    assert len(heads) == 2  # both sentences still in their input
    for head in heads:
        assert tiny_gpt2.tokenizer.decode(head).startswith(lead)
        assert len(head) + 5 + len(encoder.encode_example("x").tail) < 64
    long_lead = "Read this review and judge it carefully. " * 8  # about 70 tokens
    with pytest.raises(RLPromptError, match="is too long for tiny-gpt2: its own text takes"):
        TemplateEncoder(
            tiny_gpt2,
            Template.parse(long_lead + "{sentence} {prompt} <mask>", "causal"),
            ["terrible", "great"],
            prompt_budget=5,
        )


@pytest.mark.real_model
def test_special_token_text_in_an_input_stays_text(smol, bert):
    """A sentence that contains "[MASK]" or "<|endoftext|>" is read as those characters: a masked model's
    input keeps one mask (the template's), a causal model's no end-of-text token."""
    for lm, text in ((bert, "{sentence} {prompt} <mask> ."), (smol, "{sentence} {prompt}")):
        special = lm.mask_token if lm.kind == "masked" else lm.tokenizer.eos_token
        encoder = TemplateEncoder(lm, Template.parse(text, lm.kind), ["terrible", "great"])
        enc = encoder.encode_example(f"a {special} of a film .")
        ids = list(enc.head + enc.tail)
        assert ids.count(lm.tokenizer.convert_tokens_to_ids(special)) == (1 if lm.kind == "masked" else 0)
        plain = encoder.encode_example("a dull mess of a film .")
        assert len(ids) > len(plain.head + plain.tail)  # the characters are there
