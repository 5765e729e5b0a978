"""Gymnasium environments (installed as ``rlprompt.envs``); ``rlprompt/DiscretePrompt-v0`` is registered on import."""

from rlprompt.envs.prompt_env import PromptEnv, PromptVecEnv, register

register()

__all__ = ["PromptEnv", "PromptVecEnv"]
