"""rlprompt: discrete prompt optimisation for frozen language models with reinforcement learning."""

from rlprompt.version import __version__  # noqa: F401 - the package's version


def learn(*args, **kwargs):
    """Learn a prompt from Python: see :func:`rlprompt.api.learn`."""
    from rlprompt.api import learn as _learn

    return _learn(*args, **kwargs)


def load_prompt(path):
    """Load an exported ``prompt.json`` (see :mod:`rlprompt.export`)."""
    from rlprompt.export import load_prompt as _load

    return _load(path)
