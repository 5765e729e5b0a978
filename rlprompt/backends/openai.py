"""OpenAI-compatible completions servers (vLLM, SGLang, llama.cpp's server, hosted APIs) as the task LM.

A model name ``openai:<base URL>[#key=value&...]`` names a server, e.g.
``openai:http://127.0.0.1:8000/v1#model=smollm2``; several comma-separated base URLs name replicas of one
model (``openai:http://gpu0:8000/v1,http://gpu1:8000/v1#model=smollm2``): each request goes to the replica
with the fewest requests in flight, and a request that fails on one (unreachable, a 5xx, a timeout) is
retried on another at once, with one line on stderr naming the replica; a failed replica rests for
``FAILED_REST`` seconds before it gets requests again. Options after ``#`` (never sent to the server):

* ``model``: the served model's name (default: the server's only model, from ``GET /models``);
* ``tokenizer``: a local tokenizer identical to the served model's (an rlprompt alias, a local directory
  or a cached Hugging Face id; default: the served model's name when that is a local directory, as it is
  when vLLM serves a directory);
* ``key_env``: the environment variable holding the API key (default ``OPENAI_API_KEY``; none is sent
  when it is unset);
* ``route``: ``auto`` (default), ``label_ids`` or ``echo`` (below); ``concurrency`` (default 4):
  requests in flight at once; ``batch`` (default 32): sequences per request;
* ``timeout`` (default 300): seconds a request may take; ``retry_for`` (default 300): seconds a failing
  request is retried (unreachable, 429, a 5xx, a timeout) before the run stops, with one line on stderr
  when the retries begin (a vLLM server restarted on 2 CPU cores answered again after 2-4 minutes). A
  stopped run continues with ``--resume`` once the server is back, at its new address if need be.

Prompts go to the server as token ids from the local tokenizer, so the token boundaries are exactly the
in-process scorer's: the sentence, the prompt and the label never merge differently. Two exact routes:

* ``label_ids`` (vLLM's ``logprob_token_ids``): each sequence stops before the label and one token is
  generated, with the log-probs of the verbalizers' tokens at that position returned. No log-probs are
  asked for the prompt, so the server's prefix cache reuses a sentence across prompts. Single-token
  verbalizers only.
* ``echo``: each sequence ends with a verbalizer's tokens and the server echoes the prompt's per-token
  log-probs; a verbalizer scores as the sum of its tokens' (any length; one sequence per class).

``auto`` picks ``label_ids`` when the server offers it (probed once at load) and every verbalizer is a
single token, else ``echo``; the measured speeds are in the README.

For servers that give log-probs only for generated tokens (chat completions, most hosted models), route
``chat`` is an approximation, and says so when it starts: the filled template is sent as the user's
message, and each single-token verbalizer scores as the log-prob of its token (with or without a leading
space) among the first generated token's top 20; a verbalizer outside the top 20 gets the 20th
log-prob, an upper bound on its own. One request per (prompt, example). Failures are one line naming the
server: unreachable, a model it does not serve, a refused API key, no log-probs in its answers, a local
tokenizer that reads a probe text otherwise than the server (checked at load where the server returns
token ids, as vLLM does). Loading asks for short answers (``LOAD_TIMEOUT``, two retries), so a wrong or
hung address fails in about a minute.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rlprompt.errors import RLPromptError, ServiceUnavailable
from rlprompt.models import LanguageModel, wrap_tokenizer
from rlprompt.scoring import LabelScorer, ScorerStats

PREFIX = "openai:"
ROUTES = ("auto", "label_ids", "echo", "chat")
CHAT_TOP = 20  # the most top log-probs OpenAI's chat API returns per position
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
FAILED_REST = 30.0  # seconds a replica that failed a request gets no new ones (unless every replica failed)
LOAD_TIMEOUT = 20.0  # seconds for each of the load's requests (the model listing and the probes)
# Read by the server and by the local tokenizer at load, which must agree on its token ids: words, a
# contraction, punctuation and digits.
PROBE_TEXT = "Hello world: it wasn't a great movie, was it? 42 stars."


@dataclass(frozen=True)
class ServerSpec:
    """A parsed server model name."""

    base_urls: tuple[str, ...]  # one per replica of the served model
    model: str | None = None
    tokenizer: str | None = None
    key_env: str = "OPENAI_API_KEY"
    route: str = "auto"
    concurrency: int = 4
    batch: int = 32
    timeout: float = 300.0
    retry_for: float = 300.0

    @property
    def base_url(self) -> str:
        """The server (or its replicas), for messages."""
        return ", ".join(self.base_urls)

    @classmethod
    def parse(cls, name: str) -> ServerSpec:
        if not name.startswith(PREFIX):
            raise RLPromptError(f"{name!r} is not a server model name (openai:<base URL>[#options])")
        urls, _, fragment = name[len(PREFIX) :].partition("#")
        for url in urls.split(","):
            parsed = urllib.parse.urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise RLPromptError(
                    f"model {name!r}: the base URL must be http(s)://host[:port]/..., got {url!r}"
                )
        pairs = urllib.parse.parse_qsl(fragment, keep_blank_values=True)
        options = dict(pairs)
        if len(options) < len(pairs):
            twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
            raise RLPromptError(f"model {name!r}: option {twice!r} is given twice")
        known = {"model", "tokenizer", "key_env", "route", "concurrency", "batch", "timeout", "retry_for"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RLPromptError(
                f"model {name!r}: unknown option {unknown[0]!r}; options: {', '.join(sorted(known))}"
            )
        if options.get("route", "auto") not in ROUTES:
            raise RLPromptError(
                f"model {name!r}: route must be one of {', '.join(ROUTES)}, got {options['route']!r}"
            )
        numbers = {}
        for key in ("concurrency", "batch"):
            if key in options:
                try:
                    numbers[key] = int(options[key])
                except ValueError:
                    numbers[key] = 0
                if numbers[key] < 1:
                    raise RLPromptError(
                        f"model {name!r}: {key} must be a positive integer, got {options[key]!r}"
                    )
        for key, least in (("timeout", 1.0), ("retry_for", 0.0)):
            if key in options:
                try:
                    numbers[key] = float(options[key])
                except ValueError:
                    numbers[key] = float("nan")
                if not least <= numbers[key] < float("inf"):
                    raise RLPromptError(
                        f"model {name!r}: {key} must be a number of seconds, at least {least:g}, "
                        f"got {options[key]!r}"
                    )
        return cls(
            base_urls=tuple(dict.fromkeys(u.rstrip("/") for u in urls.split(","))),
            model=options.get("model"), tokenizer=options.get("tokenizer"),
            key_env=options.get("key_env", "OPENAI_API_KEY"), route=options.get("route", "auto"), **numbers,
        )  # fmt: skip


def same_served_model(recorded: str, new: str) -> bool:
    """Whether two server model names name the same served model and local tokenizer, whatever their
    addresses and request options (a run may resume through either). ``new`` must parse."""
    if not (recorded.startswith(PREFIX) and new.startswith(PREFIX)):
        return False
    a, b = ServerSpec.parse(recorded), ServerSpec.parse(new)
    return (a.model, a.tokenizer) == (b.model, b.tokenizer)


class ServerClient:
    """JSON over HTTP with retries and failover across replicas: the only code here that talks to servers.

    A failing request (unreachable, 429, a 5xx, a timeout) goes to another replica at once while one is
    left, else waits with exponential backoff and is retried for ``spec.retry_for`` seconds, or ``retries``
    times where given (the load's quick checks and the tests)."""

    def __init__(self, spec: ServerSpec, timeout: float | None = None, retries: int | None = None):
        self.spec, self.retries = spec, retries
        self.timeout = spec.timeout if timeout is None else timeout
        self.key = os.environ.get(spec.key_env) or None
        n = len(spec.base_urls)
        self._lock = threading.Lock()
        self._in_flight = [0] * n
        self._resting_until = [0.0] * n
        self._reported: set[int] = set()
        self._retrying = False  # a request is waiting to retry: said once on stderr, until one succeeds
        self.answered = [0] * n  # requests each replica answered
        self.failovers = 0  # requests retried on another replica after one failed

    def get(self, path: str, retries: int | None = None, timeout: float | None = None) -> dict:
        return self._request("GET", path, None, retries, timeout)

    def post(
        self, path: str, payload: dict, retries: int | None = None, timeout: float | None = None
    ) -> dict:
        return self._request("POST", path, payload, retries, timeout)

    def _pick(self, avoid: set[int]) -> int:
        """The replica with the fewest requests in flight, among those not resting and not failed for this
        request (all of them when none is left), fewest answered breaking ties; counted as in flight."""
        with self._lock:
            now = time.monotonic()
            everyone = range(len(self.spec.base_urls))
            ready = [i for i in everyone if i not in avoid and self._resting_until[i] <= now]
            choice = min(ready or [i for i in everyone if i not in avoid] or list(everyone),
                         key=lambda i: (self._in_flight[i], self.answered[i], i))  # fmt: skip
            self._in_flight[choice] += 1
            return choice

    def _done(self, replica: int, failed: str | None) -> None:
        with self._lock:
            self._in_flight[replica] -= 1
            if failed is None:
                self.answered[replica] += 1
                self._resting_until[replica] = 0.0
                recovered, self._retrying = self._retrying, False
            else:
                recovered = False
                self._resting_until[replica] = time.monotonic() + FAILED_REST
                report = replica not in self._reported and len(self.spec.base_urls) > 1
                self._reported.add(replica)
        if recovered:
            print(f"server {self.spec.base_url} answers again", file=sys.stderr, flush=True)
        elif failed is not None and report:
            print(f"server replica {self.spec.base_urls[replica]} failed ({failed}); its requests go to the "
                  "other replicas", file=sys.stderr, flush=True)  # fmt: skip

    def _waiting(self, reason: str) -> None:
        """The first request of a streak to wait for a retry says so, once."""
        with self._lock:
            first, self._retrying = not self._retrying, True
        if first:
            print(f"server {self.spec.base_url}: {reason}; retrying for up to {self.spec.retry_for:.0f} s "
                  "(#retry_for=SECONDS)", file=sys.stderr, flush=True)  # fmt: skip

    def _request(
        self, method: str, path: str, payload: dict | None, retries: int | None, timeout: float | None
    ) -> dict:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        retries = self.retries if retries is None else retries  # None: for spec.retry_for seconds
        timeout = self.timeout if timeout is None else timeout
        failed_on: set[int] = set()  # replicas this request failed on since its last wait
        attempt, first_failure = 0, None
        while True:
            replica = self._pick(failed_on)
            base = self.spec.base_urls[replica]
            url = base + path
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    answer = json.loads(response.read().decode("utf-8"))
                self._done(replica, None)
                return answer
            except urllib.error.HTTPError as err:
                body = _error_text(err)
                retry = err.code in RETRY_STATUS
                self._done(replica, f"HTTP {err.code}" if retry else None)
                if err.code in (401, 403):
                    source = "from $" if self.key else "none sent: set $"
                    raise RLPromptError(
                        f"the server at {base} refused the API key "
                        f"({source}{self.spec.key_env}): HTTP {err.code} {body}"
                    ) from None
                if err.code == 404 and "model" in body.lower():
                    raise RLPromptError(f"the server at {base}: {body}") from None
                if err.code == 404:
                    hint = "" if base.endswith("/v1") else " (does the base URL end in /v1?)"
                    raise RLPromptError(f"{method} {url}: HTTP 404 {body}{hint}") from None
                if not retry:
                    raise RLPromptError(f"{method} {url}: HTTP {err.code} {body}") from None
                reason = f"{method} {url}: HTTP {err.code} {body}".rstrip()
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                cause = getattr(err, "reason", err)
                if isinstance(cause, TimeoutError) or "timed out" in str(cause):
                    cause = f"no answer within {timeout:g} s (#timeout=SECONDS)"
                self._done(replica, str(cause))
                reason = f"cannot reach the server at {self.spec.base_url}: {cause}"
            attempt += 1
            first_failure = first_failure if first_failure is not None else time.monotonic()
            failed_on.add(replica)
            if len(failed_on) < len(self.spec.base_urls):
                with self._lock:
                    self.failovers += 1
                continue  # another replica is left: at once
            failed_on.clear()
            pause = min(15.0, 0.5 * 2 ** min(attempt - 1, 5))
            if retries is not None:  # a number of tries (the load's quick checks)
                if attempt > retries:
                    raise RLPromptError(reason)
            else:  # for retry_for seconds (during a run)
                waited = time.monotonic() - first_failure
                if waited >= self.spec.retry_for:
                    raise ServiceUnavailable(f"{reason} (retried for {waited:.0f} s)")
                self._waiting(reason)
                pause = min(pause, self.spec.retry_for - waited)
            time.sleep(pause)


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read().decode("utf-8", "replace")
        message = json.loads(body)
        if isinstance(message, dict):
            inner = message.get("error", message)
            return str(inner.get("message", inner) if isinstance(inner, dict) else inner)[:300]
        return body[:300]
    except (ValueError, OSError):
        return ""


@dataclass(eq=False)
class ServerModel(LanguageModel):
    """A task LM behind a server: the local tokenizer for templates and prompts, the client for scores."""

    client: ServerClient | None = None
    served: str = ""
    server_max_length: int | None = None
    label_ids_route: bool = False  # the server returns log-probs of chosen token ids (vLLM)

    @property
    def device(self) -> str:
        return "server"

    @property
    def dtype(self) -> str:
        return "server"

    def generate_texts(
        self, rows: list[list[int]], n: int, greedy: bool, top_k: int, max_new_tokens: int, seed: int,
        stop: list[str],
    ) -> tuple[list[list[str]], int]:  # fmt: skip
        """``n`` continuations of each token-id row, cut at the first of ``stop`` (greedy: one), and the
        number of tokens generated. Sampling is seeded per request (vLLM's ``seed``), so it repeats."""
        spec = self.client.spec

        def request(k: int) -> dict:
            chunk = rows[k : k + spec.batch]
            payload = {"model": self.served, "prompt": chunk, "max_tokens": max_new_tokens, "stop": stop,
                       "n": 1 if greedy else n, "temperature": 0 if greedy else 1.0,
                       "seed": seed + k}  # fmt: skip
            if not greedy:
                payload["top_k"] = top_k
            return self.client.post("/completions", payload)

        starts = list(range(0, len(rows), spec.batch))
        texts: list[list[str]] = [[] for _ in rows]
        generated = 0
        with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
            for k, answer in zip(starts, pool.map(request, starts), strict=True):
                for choice in answer.get("choices", []):
                    # choices come n per prompt, in order: index = prompt * n + sample
                    texts[k + choice.get("index", 0) // (1 if greedy else n)].append(choice.get("text", ""))
                generated += int((answer.get("usage") or {}).get("completion_tokens", 0))
        return texts, generated

    def token_logprobs(self, rows: list[list[int]]) -> list[list[float]]:
        """Per row, the log-prob of each of its tokens after the first (the echoed prompt's)."""
        spec = self.client.spec

        def request(k: int) -> dict:
            payload = {"model": self.served, "prompt": rows[k : k + spec.batch], "max_tokens": 1,
                       "echo": True, "logprobs": 1, "temperature": 0}  # fmt: skip
            return self.client.post("/completions", payload)

        starts = list(range(0, len(rows), spec.batch))
        out: list[list[float]] = [[] for _ in rows]
        with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
            for k, answer in zip(starts, pool.map(request, starts), strict=True):
                for choice in answer.get("choices", []):
                    i = k + choice.get("index", 0)
                    values = (choice.get("logprobs") or {}).get("token_logprobs") or []
                    out[i] = [float(v) for v in values[1 : len(rows[i])]]
        return out

    @property
    def max_length(self) -> int:
        tok = getattr(self.tokenizer, "model_max_length", None)
        candidates = [v for v in (self.server_max_length, tok) if isinstance(v, int) and 0 < v < 10**7]
        return min(candidates) if candidates else 2048


def load(name: str, device: str = "auto", dtype: str = "auto") -> ServerModel:
    """Connect to the server, check its model and its log-probs, and load the local tokenizer. ``device``
    and ``dtype`` are the server's business and are not used."""
    spec = ServerSpec.parse(name)
    client = ServerClient(spec)
    if spec.route == "chat" and spec.model is not None and spec.tokenizer is not None:
        return _chat_model(name, spec, client)
    listing = client.get("/models", retries=2, timeout=min(spec.timeout, LOAD_TIMEOUT))
    served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    if spec.model is None:
        if not served:
            raise RLPromptError(
                f"the server at {spec.base_url} lists no models (GET /models); name the served one: "
                "#model=NAME"
            )
        if len(served) != 1:
            raise RLPromptError(
                f"the server at {spec.base_url} serves {len(served)} models ({', '.join(map(str, served))}); "
                "name one: #model=NAME"
            )
        model = served[0]
    else:
        model = spec.model
        if served and model not in served:
            raise RLPromptError(
                f"the server at {spec.base_url} does not serve model {model!r}; "
                f"it serves: {', '.join(served)}"
            )
    entry = next((m for m in listing.get("data", []) if m.get("id") == model), {})
    tokenizer = _local_tokenizer(spec, model)
    lm = wrap_tokenizer(name, tokenizer)
    server = ServerModel(
        name=lm.name, kind="causal", model=None, tokenizer=tokenizer, prefix_ids=lm.prefix_ids,
        suffix_ids=lm.suffix_ids, client=client, served=model,
        server_max_length=entry.get("max_model_len"),
    )  # fmt: skip
    if spec.route != "chat":
        _check_tokenizer(server, spec.tokenizer or model)
        server.label_ids_route = _probe(server)
    return server


def _chat_model(name: str, spec: ServerSpec, client: ServerClient) -> ServerModel:
    """A chat-only server (a hosted model, say): no model listing or completions probe is needed."""
    tokenizer = _local_tokenizer(spec, spec.model)
    lm = wrap_tokenizer(name, tokenizer)
    return ServerModel(name=lm.name, kind="causal", model=None, tokenizer=tokenizer, prefix_ids=lm.prefix_ids,
                       suffix_ids=lm.suffix_ids, client=client, served=spec.model)  # fmt: skip


def _local_tokenizer(spec: ServerSpec, model: str):
    from rlprompt.models import _resolve_directory

    source = spec.tokenizer or (model if Path(model).expanduser().is_dir() else None)
    if source is None:
        raise RLPromptError(
            f"the server at {spec.base_url} serves {model!r}, which is not a local directory: name a local "
            "copy of its tokenizer with #tokenizer=DIR (or an rlprompt alias)"
        )
    from transformers import AutoTokenizer

    directory = _resolve_directory(source)
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise RLPromptError(f"cannot load the tokenizer {source!r} for {spec.base_url}: {err}") from None


def _check_tokenizer(server: ServerModel, source: str) -> None:
    """The local tokenizer must read text as the served model does (prompts travel as its token ids): the
    server tokenizes :data:`PROBE_TEXT` and echoes the ids, which must be the tokenizer's, special tokens
    aside. A server that does not echo token ids (only vLLM's ``return_tokens_as_token_ids`` does) is not
    checked."""
    payload = {"model": server.served, "prompt": PROBE_TEXT, "max_tokens": 1, "temperature": 0,
               "logprobs": 1, "echo": True, "return_tokens_as_token_ids": True}  # fmt: skip
    try:
        answer = server.client.post("/completions", payload, retries=2, timeout=LOAD_TIMEOUT * 3)
    except RLPromptError:
        return  # a server that takes no text prompt, or none at all: _probe says what it lacks
    tokens = ((answer.get("choices") or [{}])[0].get("logprobs") or {}).get("tokens") or []
    prompt_tokens = tokens[:-1]  # the last one was generated
    if not prompt_tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in prompt_tokens):
        return
    special = set(server.tokenizer.all_special_ids)
    theirs = [int(t[len("token_id:") :]) for t in prompt_tokens]
    theirs = [t for t in theirs if t not in special]
    ours = [t for t in server.encode(PROBE_TEXT) if t not in special]
    if theirs != ours:
        raise RLPromptError(
            f"the tokenizer {source!r} does not match the model {server.served!r} served at "
            f"{server.client.spec.base_url}: the server reads {PROBE_TEXT!r} as token ids {theirs[:12]}, the "
            f"tokenizer as {ours[:12]}; name a copy of the served model's tokenizer with #tokenizer=DIR"
        )


def _probe(server: ServerModel) -> bool:
    """One tiny request: the server answers with log-probs (else an error), and whether it returns the
    log-probs of chosen token ids (vLLM's ``logprob_token_ids``)."""
    ids = server.encode("Hello") or [0]
    payload = {
        "model": server.served, "prompt": [ids], "max_tokens": 1, "temperature": 0, "logprobs": 1,
        "echo": True, "return_tokens_as_token_ids": True,
    }  # fmt: skip
    answer = server.client.post("/completions", payload, retries=2, timeout=LOAD_TIMEOUT * 3)
    choice = (answer.get("choices") or [{}])[0]
    logprobs = choice.get("logprobs") or {}
    if not logprobs.get("token_logprobs"):
        raise RLPromptError(
            f"the server at {server.client.spec.base_url} returned no log-probs for {server.served!r}: "
            "rlprompt needs completions with logprobs (and echo); for a chat-only server use #route=chat "
            "(an approximation)"
        )
    try:
        probe = dict(payload, echo=False, logprob_token_ids=[ids[0]])
        answer = server.client.post("/completions", probe, retries=1, timeout=LOAD_TIMEOUT * 3)
        top = (answer["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
        return f"token_id:{ids[0]}" in (top[-1] or {})
    except RLPromptError:
        return False


class ServerScorer(LabelScorer):
    """Label log-probs from an OpenAI-compatible server (see the module docstring for the routes)."""

    def __init__(
        self, lm: ServerModel, template: str, verbalizers: Sequence[str], *, prompt_budget: int = 64,
        reward_cache_size: int = 1_000_000, stats: ScorerStats | None = None,
    ):  # fmt: skip
        super().__init__(lm, template, verbalizers, prompt_budget=prompt_budget,
                         reward_cache_size=reward_cache_size, stats=stats)  # fmt: skip
        if lm.kind != "causal":
            raise RLPromptError(f"{lm.name}: servers score causal models only")
        vids = self.encoder.verbalizer_ids
        single = all(len(ids) == 1 for ids in vids)
        route = lm.client.spec.route
        if route == "label_ids" and not (single and lm.label_ids_route):
            why = "its verbalizers are several tokens" if not single else "the server lacks logprob_token_ids"
            raise RLPromptError(f"{lm.name}: route=label_ids is not possible here: {why}; use route=echo")
        if route == "chat" and not single:
            raise RLPromptError(f"{lm.name}: route=chat scores single-token verbalizers only")
        self.route = route if route != "auto" else ("label_ids" if single and lm.label_ids_route else "echo")
        if self.route == "chat":
            print(f"rlprompt: {lm.name}: label scores from the chat endpoint's top-{CHAT_TOP} first-token "
                  "log-probs are an approximation (a label outside them gets the lowest of them)",
                  file=sys.stderr, flush=True)  # fmt: skip
            words = [w.strip() for w in self.verbalizers]
            self._chat_tokens = [{w, " " + w} for w in words]

    def _compute(self, pairs, example_by_uid, progress) -> dict:
        lm: ServerModel = self.lm
        contexts = []
        for ids, uid in pairs:
            enc = self._encoded_example(example_by_uid[uid])
            contexts.append(list(enc.head) + list(ids) + list(enc.tail))
        if self.route == "chat":
            return self._compute_chat(pairs, contexts, progress)
        if self.route == "label_ids":
            items = [(i, None, ctx) for i, ctx in enumerate(contexts)]
        else:
            vids = self.encoder.verbalizer_ids
            items = [(i, c, ctx + list(vids[c])) for i, ctx in enumerate(contexts) for c in range(len(vids))]
        batches = [items[k : k + lm.client.spec.batch] for k in range(0, len(items), lm.client.spec.batch)]
        results = np.zeros((len(pairs), self.num_classes), dtype=np.float32)
        bar = tqdm(total=len(items), desc="scoring", unit="seq", disable=not progress, leave=False)
        try:
            with ThreadPoolExecutor(max_workers=lm.client.spec.concurrency) as pool:
                for batch, answer in zip(batches, pool.map(self._request, batches), strict=True):
                    self._collect(batch, answer, results)
                    self.stats.tokens_processed += sum(len(seq) for _, _, seq in batch)
                    bar.update(len(batch))
        finally:
            bar.close()
        return {pair: results[i] for i, pair in enumerate(pairs)}

    def _compute_chat(self, pairs, contexts, progress) -> dict:
        lm: ServerModel = self.lm
        bar = tqdm(total=len(pairs), desc="scoring", unit="pair", disable=not progress, leave=False)
        results = {}
        try:
            with ThreadPoolExecutor(max_workers=lm.client.spec.concurrency) as pool:
                scored = pool.map(self._chat_scores, contexts)
                for pair, ctx, scores in zip(pairs, contexts, scored, strict=True):
                    results[pair] = scores
                    self.stats.tokens_processed += len(ctx)
                    bar.update(1)
        finally:
            bar.close()
        return results

    def _chat_scores(self, context: list[int]) -> np.ndarray:
        lm: ServerModel = self.lm
        text = lm.tokenizer.decode(context, skip_special_tokens=True)
        payload = {"model": lm.served, "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                   "temperature": 0, "logprobs": True, "top_logprobs": CHAT_TOP}  # fmt: skip
        answer = lm.client.post("/chat/completions", payload)
        content = (((answer.get("choices") or [{}])[0].get("logprobs") or {}).get("content")) or []
        top = content[0].get("top_logprobs") if content else None
        if not top:
            raise RLPromptError(f"{lm.name}: the chat endpoint returned no top log-probs")
        floor = min(t["logprob"] for t in top)
        found = [[t["logprob"] for t in top if t["token"] in tokens] for tokens in self._chat_tokens]
        return self._finite(np.array([max(values, default=floor) for values in found], dtype=np.float32))

    def _finite(self, scores: np.ndarray) -> np.ndarray:
        """Label log-probs as the server sent them, refused when one is not a number (NaN would score as
        the first class's, silently)."""
        bad = np.flatnonzero(~np.isfinite(scores) & ~np.isneginf(scores))
        if bad.size:
            raise RLPromptError(
                f"{self.lm.name}: the server returned the log-prob {scores.flat[bad[0]]} for a label "
                f"({self.verbalizers[bad[0] % self.num_classes]!r}), not a number"
            )
        return scores

    def _request(self, batch) -> dict:
        lm: ServerModel = self.lm
        payload = {"model": lm.served, "prompt": [seq for _, _, seq in batch], "max_tokens": 1,
                   "temperature": 0, "logprobs": 1, "return_tokens_as_token_ids": True}  # fmt: skip
        if self.route == "label_ids":
            payload["logprob_token_ids"] = [ids[0] for ids in self.encoder.verbalizer_ids]
        else:
            payload["echo"] = True
        return lm.client.post("/completions", payload)

    def _collect(self, batch, answer: dict, results: np.ndarray) -> None:
        choices = sorted(answer.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(batch):
            raise RLPromptError(f"{self.lm.name}: {len(choices)} answers for {len(batch)} sequences")
        vids = self.encoder.verbalizer_ids
        for (row, cls, seq), choice in zip(batch, choices, strict=True):
            logprobs = choice.get("logprobs") or {}
            if self.route == "label_ids":
                top = (logprobs.get("top_logprobs") or [None])[-1] or {}
                for c, ids in enumerate(vids):
                    value = top.get(f"token_id:{ids[0]}")
                    if value is None:
                        raise RLPromptError(
                            f"{self.lm.name}: no log-prob for verbalizer {self.verbalizers[c]!r}"
                        )
                    results[row, c] = value
            else:
                values = logprobs.get("token_logprobs") or []
                n = len(vids[cls])
                # The echoed prompt's per-token log-probs come first (the first is None), then the
                # generated token's; the verbalizer is the prompt's last n tokens.
                label = values[len(seq) - n : len(seq)]
                if len(values) < len(seq) or any(v is None for v in label):
                    raise RLPromptError(
                        f"{self.lm.name}: the server returned no log-probs for the label tokens"
                    )
                tokens = (logprobs.get("tokens") or [])[len(seq) - n : len(seq)]
                if tokens and tokens != [f"token_id:{t}" for t in vids[cls]]:
                    raise RLPromptError(
                        f"{self.lm.name}: the echoed label tokens {tokens} are not {list(vids[cls])}"
                    )
                results[row, cls] = float(sum(label))
        self._finite(results[[row for row, _, _ in batch]])


SCORER = ServerScorer
