"""Several replicas behind one server model name: the client spreads requests by the fewest in flight and
fails over at once when a replica is down. Stand-in HTTP servers on 127.0.0.1 (no model needed); the
failover against a real vLLM server is in test_server.py."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlprompt.backends.openai import ServerClient, ServerSpec
from rlprompt.backends.vllm_launcher import free_port
from rlprompt.errors import RLPromptError
from tests.conftest import send_json


class _Echo(BaseHTTPRequestHandler):
    """Answers every POST with its own port after a short delay (so requests overlap)."""

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.05)
        send_json(self, {"port": self.server.server_address[1]})

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_ins():
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def _client(urls, retries=5) -> ServerClient:
    return ServerClient(ServerSpec.parse("openai:" + ",".join(urls)), timeout=10, retries=retries)


def test_requests_spread_over_replicas_by_fewest_in_flight(stand_ins):
    client = _client(stand_ins)
    with ThreadPoolExecutor(max_workers=4) as pool:
        ports = list(pool.map(lambda _: client.post("/completions", {})["port"], range(40)))
    # Four requests in flight at a time over two replicas: each gets about half, and both get some.
    assert sorted(client.answered) == sorted(
        ports.count(int(u.split(":")[2].split("/")[0])) for u in stand_ins
    )
    assert min(client.answered) >= 12 and sum(client.answered) == 40 and client.failovers == 0


def test_a_dead_replica_fails_over_at_once_and_is_reported_once(stand_ins, capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = _client([dead, stand_ins[0]])
    start = time.monotonic()
    answers = [client.post("/completions", {}) for _ in range(10)]
    assert time.monotonic() - start < 5, "failover waits for no backoff while a replica is left"
    assert all(a["port"] == _port(stand_ins[0]) for a in answers)
    assert client.answered == [0, 10]
    assert client.failovers == 1, "the dead replica rests after its failure: later requests skip it"
    err = capsys.readouterr().err
    assert err.count("server replica") == 1 and dead in err and "other replicas" in err


def test_every_replica_down_is_one_clear_error(capsys):
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    client = _client(urls, retries=1)
    with pytest.raises(RLPromptError, match="cannot reach the server at") as raised:
        client.post("/completions", {})
    assert all(u in str(raised.value) for u in urls)


def test_replica_names_parse():
    spec = ServerSpec.parse("openai:http://a:1/v1/,http://b:2/v1#model=m")
    assert spec.base_urls == ("http://a:1/v1", "http://b:2/v1") and spec.model == "m"
    with pytest.raises(RLPromptError, match="base URL"):
        ServerSpec.parse("openai:http://a:1/v1,ftp://b/v1")


class _Flaky(BaseHTTPRequestHandler):
    """Answers HTTP 503 to its first ``server.failures`` POSTs (all of them when None), then its port."""

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        server.seen += 1
        if server.failures is None or server.seen <= server.failures:
            self.send_error(503, "restarting")
            return
        send_json(self, {"port": server.server_address[1]})

    def log_message(self, *args):
        pass


def _serve(handler, **attributes) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads, server.block_on_close = True, False  # a hung handler must not block the close
    for key, value in attributes.items():
        setattr(server, key, value)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_failing_server_is_retried_for_retry_for_seconds_and_says_so_once(capsys):
    """A restarting server (503s, then answers) costs a wait, with one line when the retries begin and one
    when it answers again; one that never answers stops the request after retry_for seconds with
    ServiceUnavailable, which the driver turns into a resumable stop."""
    from rlprompt.errors import ServiceUnavailable

    flaky = _serve(_Flaky, failures=3, seen=0)
    down = _serve(_Flaky, failures=None, seen=0)
    try:
        url = f"http://127.0.0.1:{flaky.server_address[1]}/v1"
        client = ServerClient(ServerSpec.parse(f"openai:{url}#retry_for=60"))
        assert client.post("/completions", {})["port"] == flaky.server_address[1]
        err = capsys.readouterr().err
        assert err.count("retrying for up to 60 s") == 1 and err.count("answers again") == 1, err
        assert flaky.seen == 4
        url = f"http://127.0.0.1:{down.server_address[1]}/v1"
        client = ServerClient(ServerSpec.parse(f"openai:{url}#retry_for=2"))
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable, match=r"HTTP 503 .*\(retried for 2 s\)"):
            client.post("/completions", {})
        assert 2 <= time.monotonic() - start < 10 and down.seen >= 3
    finally:
        for server in (flaky, down):
            server.shutdown()
            server.server_close()


class _Hung(BaseHTTPRequestHandler):
    """Takes every request and answers none (until the test releases it)."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.release.wait(60)

    def log_message(self, *args):
        pass


def test_a_hung_server_fails_the_load_within_its_timeout():
    from rlprompt.backends import load_task_model

    hung = _serve(_Hung, release=threading.Event())
    try:
        url = f"http://127.0.0.1:{hung.server_address[1]}/v1"
        start = time.monotonic()
        with pytest.raises(RLPromptError, match=r"cannot reach the server at .*: no answer within 1 s"):
            load_task_model(f"openai:{url}#tokenizer=smollm2-135m&timeout=1")
        assert time.monotonic() - start < 15, "three tries of 1 s and their backoff"
    finally:
        hung.release.set()
        hung.shutdown()
        hung.server_close()


def test_server_options_are_checked():
    spec = ServerSpec.parse("openai:http://h:1/v1#timeout=30&retry_for=0")
    assert (spec.timeout, spec.retry_for) == (30.0, 0.0)
    bad_names = [("openai:http://h/v1#model=a&model=b", "option 'model' is given twice"),
                 ("openai:http://h/v1#timeout=0.5", "timeout must be a number of seconds, at least 1"),
                 ("openai:http://h/v1#retry_for=soon", "retry_for must be a number of seconds"),
                 ("openai:http://h/v1#retry_for=inf", "retry_for must be a number of seconds")]  # fmt: skip
    for bad, message in bad_names:
        with pytest.raises(RLPromptError, match=message):
            ServerSpec.parse(bad)


def test_a_run_resumes_through_another_address_of_the_same_served_model(tmp_path):
    """--resume --set model=... is allowed for a server model naming the same served model and tokenizer (a
    restarted server has a new port); not for another tokenizer or model."""
    from rlprompt.train import _resumable

    config = tmp_path / "config.yaml"
    config.write_text("model: openai:http://127.0.0.1:8000/v1#tokenizer=smollm2-135m\nseed: 0\n")
    assert _resumable("model=openai:http://127.0.0.1:9000/v1#tokenizer=smollm2-135m&concurrency=2", config)
    assert _resumable("rl.learning_rate=1e-4", config)
    assert not _resumable("model=openai:http://127.0.0.1:9000/v1#tokenizer=gemma3-270m", config)
    assert not _resumable("model=smollm2-135m", config)
    assert not _resumable("seed=1", config)
    config.write_text("model: smollm2-135m\n")
    assert not _resumable("model=openai:http://127.0.0.1:9000/v1#tokenizer=smollm2-135m", config)


class _NotANumber(BaseHTTPRequestHandler):
    """An OpenAI-style server whose echoed log-probs are NaN (vLLM never sends one; others might)."""

    def do_GET(self):  # noqa: N802 - the http.server API
        send_json(self, {"data": [{"id": "stand-in"}]})

    def do_POST(self):  # noqa: N802
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
        nan = float("nan")
        choices = [{"index": i, "text": " x", "logprobs": {"token_logprobs": [None] + [nan] * len(p)}}
                   for i, p in enumerate(prompts)]  # fmt: skip
        send_json(self, {"choices": choices})

    def log_message(self, *args):
        pass


def test_a_label_log_prob_that_is_not_a_number_is_refused():
    from rlprompt.backends import load_task_model
    from rlprompt.evaluation import make_scorer
    from rlprompt.tasks import load_task

    server = _serve(_NotANumber)
    try:
        lm = load_task_model(f"openai:http://127.0.0.1:{server.server_address[1]}/v1#tokenizer=smollm2-135m")
        task = load_task("sst-2")
        scorer = make_scorer(lm, task)
        with pytest.raises(RLPromptError, match=r"returned the log-prob nan for a label \('terrible'\)"):
            scorer.score(["It was"], task.examples("test")[:2])
    finally:
        server.shutdown()
        server.server_close()
