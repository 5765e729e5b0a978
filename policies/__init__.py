"""Policy networks for Stable-Baselines3 (installed as ``rlprompt.policies``)."""

from rlprompt.policies.token_policy import TokenPolicy

__all__ = ["TokenPolicy"]
