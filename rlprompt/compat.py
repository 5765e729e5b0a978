"""Small shims over API differences between the library versions rlprompt supports.

transformers 5.24 renamed the key/value cache argument of every model's ``forward`` from
``past_key_values`` to ``cache`` (and the output field likewise); the old name warns and goes away in
5.40. Other environments still run older 5.x releases (vLLM's needs transformers < 5.20), so the name is
read from the model's own signature instead of being assumed.
"""

from __future__ import annotations

import inspect

import torch

_CACHE_ARGUMENT: dict[type, str] = {}


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword under which ``model.forward`` takes a key/value cache: ``cache`` (transformers >= 5.24)
    or ``past_key_values`` (earlier releases, and models whose code has not moved yet)."""
    cls = type(model)
    name = _CACHE_ARGUMENT.get(cls)
    if name is None:
        parameters = inspect.signature(model.forward).parameters
        name = _CACHE_ARGUMENT[cls] = "cache" if "cache" in parameters else "past_key_values"
    return name


def with_cache(model: torch.nn.Module, cache) -> dict:
    """Keyword arguments that hand ``cache`` to ``model`` and ask for it back."""
    return {cache_argument(model): cache, "use_cache": True}


def returned_cache(output):
    """The key/value cache a forward pass returned, under whichever name this transformers uses."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")
