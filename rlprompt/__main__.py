"""``python -m rlprompt``: the same as the ``rlprompt`` command."""

from rlprompt.cli import run

run()
