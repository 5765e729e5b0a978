"""Gymnasium environments (installed as ``rlprompt.envs``)."""
