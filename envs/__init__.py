"""Gymnasium environments (installed as ``rlprompt.envs``); importing it registers
``rlprompt/DiscretePrompt-v0``."""

from rlprompt.envs.prompt_env import PromptEnv, PromptVecEnv, register

register()

__all__ = ["PromptEnv", "PromptVecEnv"]
