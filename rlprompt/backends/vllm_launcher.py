"""Start a local vLLM server over an offline model, for the server tests and the backend benchmark.

vLLM pins its own transformers, so it lives in its own virtual environment (``make vllm`` builds
``.venv-vllm``) and runs as a separate process, as it does for real users. The server listens on
127.0.0.1 only, on a free port, and dies with the process that started it (Linux's parent-death signal),
so a killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rlprompt.errors import RLPromptError

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


@contextlib.contextmanager
def vllm_server(
    model_dir: str | Path, api_key: str | None = None, timeout: float = 600.0, log: Path | None = None,
    extra: list[str] = (),
) -> Iterator[str]:  # fmt: skip
    """A vLLM OpenAI-compatible server for ``model_dir`` (fp32, 512-token context); yields its base URL
    (``http://127.0.0.1:PORT/v1``) once ``/health`` answers, and stops it (and its engine process) on exit."""
    python = Path(os.environ.get("RLPROMPT_VLLM_PYTHON", "").strip() or VLLM_PYTHON)  # (set but empty: unset)
    if not python.is_file():
        raise RLPromptError(f"no vLLM environment at {python.parent.parent}: build it with `make vllm`")
    port = free_port()
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
               *(["--api-key", api_key] if api_key else []), *extra]  # fmt: skip
    # vLLM leaves its IPC sockets and distributed-init files in the temp directory: give it one of its own,
    # removed with the server.
    scratch = tempfile.TemporaryDirectory(prefix="rlprompt-vllm-")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "TMPDIR": scratch.name}  # fmt: skip
    env.pop("OPENAI_API_KEY", None)
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RLPromptError(f"the vLLM server exited with status {proc.returncode} while starting"
                                    + (f"; see {log}" if log else ""))  # fmt: skip
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RLPromptError(f"the vLLM server did not start within {timeout:.0f} s")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the API server and its engine core process
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()
        scratch.cleanup()
