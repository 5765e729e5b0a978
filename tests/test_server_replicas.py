"""Several replicas behind one server model name: the client spreads requests by the fewest in flight and
fails over at once when a replica is down. Stand-in HTTP servers on 127.0.0.1 (no model needed); the
failover against a real vLLM server is in test_server.py."""

from __future__ import annotations

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
