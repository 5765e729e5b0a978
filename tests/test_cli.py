"""The ``rlprompt`` console command installed by pyproject.toml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = Path(sys.executable).parent / "rlprompt"


def test_the_command_lists_its_subcommands():
    done = subprocess.run([str(COMMAND), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for name in ("train", "evaluate", "transfer", "rewrite", "report"):
        assert f"  {name} " in done.stdout
    wrong = subprocess.run([str(COMMAND), "fly"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.strip() == (
        "error: unknown subcommand 'fly'; choose one of train, evaluate, transfer, rewrite, report"
    )


def test_a_subcommand_takes_the_module_s_options(bert):
    args = ["evaluate", "--model", "bert-tiny-splade", "--task", "sst-2", "--limit", "4",
            "--prompt", "It was", "--json"]  # fmt: skip
    done = subprocess.run([str(COMMAND), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    by_module = subprocess.run([sys.executable, "-m", "rlprompt.evaluate", *args[1:]], capture_output=True,
                               text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert json.loads(done.stdout)["results"] == json.loads(by_module.stdout)["results"]
    bad = subprocess.run([str(COMMAND), "evaluate", "--model", "gpt-17"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown model 'gpt-17'")
    # Its usage names the command as typed, not the module behind it.
    helped = subprocess.run([str(COMMAND), "transfer", "--help"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)  # fmt: skip
    assert helped.returncode == 0 and helped.stdout.startswith("usage: rlprompt transfer "), helped.stdout
    assert "--help lists the options" not in helped.stdout
    flagged = subprocess.run([str(COMMAND), "report", "--nope"], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)  # fmt: skip
    assert flagged.returncode == 2 and "(rlprompt report --help lists the options)" in flagged.stderr
