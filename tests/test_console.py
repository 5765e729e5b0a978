"""The quiet console of the command-line tools, and the guard that fails the suite on our deprecated calls."""

from __future__ import annotations

import copy
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rlprompt.console import quiet_libraries, verbose_requested
from tests import deprecation_guard

ROOT = Path(__file__).resolve().parents[1]


def _library_noise() -> None:
    """What libraries print: a warning raised in a library module, and a transformers log line."""
    from transformers.utils import logging as hf_logging

    warnings.warn_explicit("library noise", UserWarning, "somelib/core.py", 1, module="somelib.core")
    hf_logging.get_logger("transformers.noise").warning("transformers noise")


def test_library_warnings_and_log_lines_are_hidden_unless_verbose(monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("RLPROMPT_VERBOSE", raising=False)
    # A console handler of our own on the transformers logger, as its own is (pytest swaps sys.stderr).
    hf_logging.get_logger("transformers")
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with quiet_libraries(verbose=False):
                _library_noise()
                warnings.warn_explicit("our own", UserWarning, "rlprompt/x.py", 1, module="rlprompt.x")
            assert [str(w.message) for w in shown] == ["our own"], "the project's own warnings still show"
            assert console.getvalue() == ""
            shown.clear()
            with quiet_libraries(verbose=True):
                _library_noise()
            assert [str(w.message) for w in shown] == ["library noise"]
            assert console.getvalue() == "transformers noise\n"
            shown.clear()
            _library_noise()  # and everything is back as it was after the block
            assert [str(w.message) for w in shown] == ["library noise"]
            assert console.getvalue() == "transformers noise\n" * 2
    finally:
        logging.getLogger("transformers").removeHandler(handler)


def test_verbose_is_asked_for_by_flag_or_environment(monkeypatch):
    monkeypatch.delenv("RLPROMPT_VERBOSE", raising=False)
    assert not verbose_requested(["--model", "x"]) and verbose_requested(["--verbose"])
    monkeypatch.setenv("RLPROMPT_VERBOSE", "1")
    assert verbose_requested([])
    monkeypatch.setenv("RLPROMPT_VERBOSE", "0")
    assert not verbose_requested([])


@pytest.mark.real_model
def test_evaluate_prints_no_warning_on_the_offline_model():
    """The README's promise, as a user runs it: no library warning reaches the terminal."""
    env = {k: v for k, v in os.environ.items() if k != "RLPROMPT_VERBOSE"}
    done = subprocess.run(
        [sys.executable, "-m", "rlprompt.evaluate", "--model", "smollm2-135m", "--task", "sst-2",
         "--split", "dev", "--prompt", "It was", "--limit", "8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr
    assert "'It was'" in done.stdout


def test_the_guard_blames_our_calls_through_torch_and_the_logger(tiny_llama):
    """A deprecated argument passed by our code (transformers blames torch's Module.__call__ for it) and a
    deprecation announced through transformers' logger both count as ours; the guard names this file."""
    base = tiny_llama.model.base_model
    ids = torch.tensor([[1, 2, 3]])
    deprecation_guard.take()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base(input_ids=ids, past_key_values=None)
    (offence,) = deprecation_guard.take()
    assert "past_key_values" in offence.message and offence.caller.startswith(__file__), offence

    logging.Logger.warning_once.cache_clear()  # transformers says each deprecation once per process
    out = base(input_ids=ids, use_cache=True)
    out.past_key_values  # noqa: B018 - the deprecated attribute, read on purpose
    (offence,) = deprecation_guard.take()
    assert "deprecated" in offence.message and offence.caller.startswith(__file__), offence


def test_the_guard_lets_a_library_s_own_deprecated_calls_through(tiny_llama):
    """PEFT reads transformers' deprecated `is_gradient_checkpointing` inside PeftModel: not our call."""
    from peft import LoraConfig, get_peft_model

    deprecation_guard.take()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(r=2, target_modules=["q_proj"]))
    assert deprecation_guard.take() == []
    # It is a real deprecation warning, so this test shows the guard tells whose call it was.
    assert any(issubclass(w.category, FutureWarning) for w in seen), [str(w.message) for w in seen]
