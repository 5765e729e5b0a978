"""Exported discrete prompts: a versioned ``prompt.json`` and the API that reads it back.

``rlprompt.load_prompt(path)`` gives a :class:`LearnedPrompt` that fills templates for any model: on the
model it was learned on it keeps its exact token ids; elsewhere it is re-tokenized from its text.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlprompt.errors import RLPromptError

FORMAT = "rlprompt.prompt"
VERSION = 1


@dataclass
class LearnedPrompt:
    text: str
    token_ids: list[int]
    model: str  # the model (and tokenizer) the prompt was learned on
    model_kind: str
    template: str
    verbalizers: list[str]
    task: str
    method: str
    seed: int
    class_names: list[str] = field(default_factory=list)
    data_seed: str | None = None
    task_source: str | None = None  # how to load the task again: a built-in name or a task YAML path
    metrics: dict = field(default_factory=dict)
    library_version: str = ""
    format: str = FORMAT
    version: int = VERSION

    def template_for(self, kind: str) -> str:
        """The prompt's own template on a model of its kind; RLPrompt's default for the other kind."""
        from rlprompt.templates import DEFAULT_TEMPLATES

        return self.template if kind == self.model_kind else DEFAULT_TEMPLATES[kind]

    def prompt_for(self, model_name: str) -> str | tuple[int, ...]:
        """What to give the Scorer on ``model_name``: the exact ids on the source model, else the text."""
        return tuple(self.token_ids) if model_name == self.model else self.text.strip()

    def fill(self, sentence: str, kind: str | None = None, label: str = "<mask>") -> str:
        """The filled template as text, e.g. to paste into another tool."""
        from rlprompt.templates import Template

        kind = kind or self.model_kind
        template = Template.parse(self.template_for(kind), kind)
        return template.fill_text(sentence, self.text.strip(), label)


def save_prompt(prompt: LearnedPrompt, path: Path) -> None:
    """Write ``prompt.json`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(prompt), indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".prompt-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; an exported prompt is meant to be shared
    os.replace(tmp, path)


def load_prompt(path: str | Path) -> LearnedPrompt:
    """Read an exported prompt, with clear errors for a missing, broken or foreign file."""
    from rlprompt.tasks import read_text

    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RLPromptError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RLPromptError(f'{path}: not an rlprompt prompt file (no "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise RLPromptError(
            f"{path}: prompt file version {data.get('version')!r}; this rlprompt reads {VERSION}"
        )
    known = set(LearnedPrompt.__dataclass_fields__)
    try:
        return LearnedPrompt(**{k: v for k, v in data.items() if k in known})
    except TypeError as err:
        raise RLPromptError(f"{path}: incomplete prompt file ({err})") from None
