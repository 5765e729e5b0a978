"""Action vocabularies: which tokens the policy may write.

* ``frequent`` (default): the ``size`` most frequent English words (``rlprompt/data/common_words.txt``,
  word counts of the SST-2 training phrases, no labels) that are a single token for the model (with a
  leading space on causal models: ``" great"``). Whole common words, not fragments or punctuation: a small
  vocabulary of real words is what lets a policy learn from a few thousand reward queries, and it keeps
  the prompts readable.
* ``all``: every non-special token (RLPrompt's choice; needs far more training).
* ``list``: the words the user lists, each of which must be one token.
"""

from __future__ import annotations

from importlib.resources import files

from rlprompt.errors import RLPromptError
from rlprompt.models import LanguageModel


def action_vocabulary(
    lm: LanguageModel, kind: str = "frequent", size: int = 2000, tokens: list[str] | None = None
) -> list[int]:
    """Token ids of the action vocabulary, in a fixed order (action index -> token id)."""
    tok = lm.tokenizer
    special = set(tok.all_special_ids)
    if kind == "all":
        return [i for i in range(len(tok)) if i not in special]
    if kind == "list":
        if not tokens:
            raise RLPromptError("vocab.kind 'list' needs vocab.tokens: the words the policy may use")
        ids = []
        for word in tokens:
            encoded = lm.encode(" " + word.strip()) if lm.kind == "causal" else lm.encode(word.strip())
            if len(encoded) != 1:
                raise RLPromptError(f"vocab.tokens: {word!r} is {len(encoded)} tokens for {lm.name}, not one")
            ids.append(encoded[0])
        ids = list(dict.fromkeys(ids))
        if len(ids) < 2:  # one token leaves the policy nothing to choose
            raise RLPromptError(
                f"vocab.tokens: {tokens} are one token for {lm.name}; give at least 2 distinct ones"
            )
        return ids
    if kind != "frequent":
        raise RLPromptError(f"vocab.kind must be 'frequent', 'all' or 'list', got {kind!r}")
    if size < 2:
        raise RLPromptError(f"vocab.size must be at least 2, got {size}")
    ids: list[int] = []
    for word in common_words():
        encoded = lm.encode(" " + word) if lm.kind == "causal" else lm.encode(word)
        if len(encoded) == 1 and encoded[0] not in special and encoded[0] not in ids:
            ids.append(encoded[0])
            if len(ids) == size:
                break
    return ids


def common_words() -> list[str]:
    """Frequent English words, most frequent first (package data)."""
    path = files("rlprompt") / "data" / "common_words.txt"
    return [w for w in path.read_text(encoding="utf-8").split("\n") if w and not w.startswith("#")]


DEFAULT_BACKBONE = "smollm2-135m"  # the policy's backbone when the task LM runs elsewhere (a server)
TRANSLATION_ROOM = 4  # task-LM tokens reserved per policy token when the two tokenizers differ


def default_backbone(model: str) -> str:
    """The task LM itself when it runs in this process, else the default local backbone."""
    from rlprompt.backends import backend_of

    return model if backend_of(model).name == "hf" else DEFAULT_BACKBONE


def policy_backbone(config) -> str:
    """The name of the model whose tokens the policy (or the search) writes: ``policy.backbone``, else the
    default."""
    return config.policy.backbone or default_backbone(config.model)


def policy_model(config) -> LanguageModel:
    """That model, loaded (once per process)."""
    from rlprompt.models import load_model

    return load_model(policy_backbone(config), config.device, config.dtype)
