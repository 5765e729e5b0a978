"""rlprompt: discrete prompt optimisation for frozen language models with reinforcement learning."""

__version__ = "0.1.0"


def load_prompt(path):
    """Load an exported ``prompt.json`` (see :mod:`rlprompt.export`)."""
    from rlprompt.export import load_prompt as _load

    return _load(path)
