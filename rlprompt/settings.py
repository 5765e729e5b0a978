"""Checks for settings dataclasses, run in their own ``__post_init__`` (PEFT style): each raises
``ValueError`` naming the dotted key as the user writes it (``search.population``); the config loader
(:mod:`rlprompt.config`) adds the file name."""

from __future__ import annotations


def at_least_one(section: str, **values) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"'{_key(section, key)}' must be at least 1, got {value}")


def positive(section: str, **values) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"'{_key(section, key)}' must be positive, got {value}")


def within(section: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"'{_key(section, key)}' must be between {low:g} and {high:g}, got {value}")


def _key(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key
