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
