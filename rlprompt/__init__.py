"""rlprompt: discrete prompt optimisation for frozen language models with reinforcement learning."""

__version__ = "0.1.0"
