"""Reading and writing the project's files: text and YAML read with errors that name the file, and
atomic writes. Light (the standard library and PyYAML), so any module can use it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from rlprompt.errors import RLPromptError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename, so a kill
    leaves the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; run outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_dir(path: Path, what: str) -> Path:
    """``path`` as a directory outputs can go to, checked before any work: neither it nor a folder above it
    may be a file, and the nearest existing one must be writable. ``what`` names the option, for the error."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "is a file" if existing == path else f"is under {existing}, a file"
                raise RLPromptError(f"{what} {path}: {where}, not a directory")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise RLPromptError(f"{what} {path}: {existing} is not writable")
            break
    return path


def read_text(path: Path) -> str:
    """A whole UTF-8 file, with clear errors for a missing, unreadable or non-UTF-8 file."""
    path = Path(path)
    if not path.exists():
        raise RLPromptError(f"{path}: file not found")
    if not path.is_file():
        raise RLPromptError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RLPromptError(f"{path}: cannot read ({err.strerror})") from None
    return decode_text(data, path)


def decode_text(data: bytes, where) -> str:
    """UTF-8 bytes as text, read as Python reads a text file (a BOM dropped, every line end made "\\n"),
    with a clear error naming ``where`` for bytes that are not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RLPromptError(f"{where}: not UTF-8 text (bad byte at offset {err.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML itself keeps the last, so a
    second ``rl:`` section would silently replace the first). Keys a ``<<`` merge brings in may still be
    overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base constructor reports it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )  # fmt: skip
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """Parse YAML text with :class:`UniqueKeyLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a file, with errors that name the file."""
    text = read_text(Path(path))
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise RLPromptError(f"{path}: not valid YAML{at} ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RLPromptError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


class DirectoryLock:
    """One process at a time in a run directory (two would each take the other's runs as failed): an
    exclusive ``flock`` on ``<dir>/.lock``, released (and the file removed) by :meth:`release` or when the
    process ends. Where ``fcntl`` is missing (Windows) nothing is locked."""

    NAME = ".lock"

    def __init__(self, directory: Path):
        self.path = Path(directory) / self.NAME
        self._file = None
        try:
            import fcntl
        except ImportError:
            return
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RLPromptError(
                f"{directory}: in use by another rlprompt process (pid {holder}); wait for it to end, "
                "or give another --run-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None
