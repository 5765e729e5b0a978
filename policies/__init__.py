"""Policy networks for Stable-Baselines3 (installed as ``rlprompt.policies``)."""
