"""The server backend against a real vLLM server (started once for the module, on 127.0.0.1, with an API
key), plus one small local stand-in for a server that returns no log-probs (vLLM cannot be made to)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from rlprompt.backends import load_task_model
from rlprompt.backends.hf import Scorer
from rlprompt.backends.vllm_launcher import free_port, vllm_server
from rlprompt.errors import RLPromptError, run_cli
from rlprompt.evaluation import make_scorer
from rlprompt.models import _resolve_directory
from rlprompt.tasks import load_task
from rlprompt.vocab import action_vocabulary
from tests.conftest import send_json, write_task

pytestmark = pytest.mark.server
KEY = "rlprompt-test-key"


@pytest.fixture(scope="module")
def vllm_url(smol, tmp_path_factory):
    """A vLLM server over the dequantised SmolLM2 (the directory its offline bundle caches), with an
    API key; the key is in $RLPROMPT_TEST_KEY for the server model names below."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLPROMPT_TEST_KEY", KEY)
        with vllm_server(_resolve_directory("smollm2-135m"), api_key=KEY, log=log) as url:
            yield url


def server_name(url: str, **options) -> str:
    options = {"key_env": "RLPROMPT_TEST_KEY", "tokenizer": "smollm2-135m", **options}
    return f"openai:{url}#" + "&".join(f"{k}={v}" for k, v in options.items())


# The echo route asks vLLM for every position's log-probs (202 s against label_ids' 70 s for the same 512
# pairs in CI on 2 cores), so it checks 4 prompts (128 pairs) where label_ids checks 16.
@pytest.mark.parametrize("route, n_prompts", [("label_ids", 16), ("echo", 4)])
def test_server_label_logprobs_equal_the_in_process_scorer(route, n_prompts, vllm_url, smol):
    """Prompts x 32 SST-2 sentences: vLLM (fp32) and the in-process fp32 scorer agree to 1e-3 (measured:
    4e-5); different kernels and batch shapes, so not bit for bit."""
    task = load_task("sst-2")
    examples = task.examples("train")
    rng = np.random.default_rng(0)
    vocab = action_vocabulary(smol, "frequent", 1000)
    prompts = [tuple(int(t) for t in rng.choice(vocab, size=5)) for _ in range(n_prompts)]
    server = load_task_model(server_name(vllm_url, route=route))
    remote = make_scorer(server, task, prompt_budget=8)
    assert remote.route == route
    local = Scorer(smol, task.template_for("causal"), task.verbalizers, prompt_budget=8)
    got, want = remote.score(prompts, examples), local.score(prompts, examples)
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert remote.stats.pairs_scored == len(prompts) * len(examples) and remote.stats.tokens_processed > 0
    again = remote.score(prompts, examples)
    assert np.array_equal(again, got), "cached: the same scores"
    assert remote.stats.pairs_scored == len(prompts) * len(examples), "cached: nothing sent again"


def test_replicas_fail_over_from_a_dead_address_to_the_real_server(vllm_url, capsys):
    """Two replicas, the first a dead address: loading and scoring go to the live vLLM server at once, the
    scores equal a single-server scorer's, and the dead replica is named once on stderr."""
    task = load_task("sst-2")
    examples = task.examples("train")[:8]
    prompts = ["It was", "All in all", "Overall"]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    fleet = load_task_model(server_name(f"{dead},{vllm_url}", route="label_ids"))
    single = load_task_model(server_name(vllm_url, route="label_ids"))
    got = make_scorer(fleet, task, prompt_budget=8).score(prompts, examples)
    want = make_scorer(single, task, prompt_budget=8).score(prompts, examples)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert fleet.client.failovers >= 1 and fleet.client.answered[0] == 0 and fleet.client.answered[1] > 0
    err = capsys.readouterr().err
    assert err.count(f"server replica {dead} failed") == 1


def test_rl_against_the_server_raises_its_training_reward(vllm_url, tmp_path, capsys):
    """An easy task: four upbeat sentences labelled "terrible" (and a plain one labelled "great": every
    class has training examples). SmolLM2 calls them all great, so the reward starts low; prompts with the
    right words flip the four. The training reward of the last quarter of the run beats the first
    quarter's by more than three standard errors (Welch's t; in-process fp32, measured: 14.6)."""
    from rlprompt.train import main as train_main

    rows = [("a bright , lively film .", 0), ("sunny and warm .", 0), ("full of colour .", 0),
            ("a big , loud show .", 0), ("a film .", 1)]  # fmt: skip
    task = write_task(tmp_path, "flip", rows)
    argv = ["--quiet", "--run-dir", str(tmp_path / "run"), "--set", f"model={server_name(vllm_url)}",
            "--set", f"task.name={task}", "--set", "total_timesteps=1600", "--set", "evaluations=40",
            "--set", "env.num_envs=8", "--set", "env.prompt_length=2", "--set", "env.examples_per_reward=5",
            "--set", "rl.n_steps=2", "--set", "rl.batch_size=16", "--set", "rl.learning_rate=3e-3",
            "--set", "vocab.size=200", "--set", "policy.adapter_hidden=64", "--set", "candidates_per_eval=1",
            "--set", "manual_prompt=It was", "--set", "seed=0"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    assert done.value.code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = np.array([r["train_reward"] for r in records if r.get("train_reward") is not None])
    quarter = len(rewards) // 4
    early, late = rewards[:quarter], rewards[-quarter:]
    t = (late.mean() - early.mean()) / np.sqrt(late.var(ddof=1) / len(late) + early.var(ddof=1) / len(early))
    assert t > 3, (early.round(1).tolist(), late.round(1).tolist())
    config = (tmp_path / "run" / "config.yaml").read_text()
    # The server's own placement is its business; config.yaml records where the policy's backbone ran here.
    assert "openai:" in config and "\ndevice: cpu\ndtype: float32\n" in config, config


def test_server_errors_are_one_line(vllm_url, capsys, monkeypatch):
    from rlprompt.evaluate import main as evaluate_main

    dead = f"http://127.0.0.1:{free_port()}/v1"
    cases = [
        (server_name(dead), "cannot reach the server at http://127.0.0.1:"),
        (server_name(vllm_url, model="gpt-17"), "does not serve model 'gpt-17'; it serves:"),
        (server_name(vllm_url, key_env="WRONG_KEY"), "refused the API key (from $WRONG_KEY)"),
        (server_name(vllm_url, key_env="NO_KEY"), "refused the API key (none sent: set $NO_KEY)"),
        (f"openai:{vllm_url}#color=blue", "unknown option 'color'"),
    ]  # fmt: skip
    monkeypatch.setenv("WRONG_KEY", "not-the-key")
    monkeypatch.delenv("NO_KEY", raising=False)
    for name, message in cases:
        with pytest.raises(SystemExit) as done:
            run_cli(evaluate_main, ["--model", name, "--task", "sst-2", "--limit", "2", "--prompt", "It was"])
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert message in err, err


def test_a_tokenizer_that_reads_text_otherwise_than_the_served_model_is_refused_at_load(vllm_url):
    """Prompts travel as the local tokenizer's ids: BERT's ids fed to SmolLM2 scored at chance without a
    word (measured before the check: 0.400 on 20 examples)."""
    with pytest.raises(RLPromptError, match=r"the tokenizer 'bert-tiny-splade' does not match the model"):
        load_task_model(server_name(vllm_url, tokenizer="bert-tiny-splade"))


class _DiesAfterCheckpoint(BaseHTTPRequestHandler):
    """A LOCAL STAND-IN in front of the real server: passes requests through until the run's first
    checkpoint exists, then answers 503 to everything, as a server going down mid-run."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self._forward(None)

    def do_POST(self):  # noqa: N802
        self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _forward(self, body):
        import urllib.request

        if (self.server.run_dir / "checkpoint.pt").exists():
            self.send_error(503, "gone")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(self.server.target + self.path[len("/v1") :], data=body,
                                         headers=headers, method=self.command)  # fmt: skip
        with urllib.request.urlopen(request, timeout=300) as response:
            send_json(self, json.loads(response.read()))

    def log_message(self, *args):
        pass


def test_a_run_whose_server_stops_answering_resumes_through_its_new_address(vllm_url, tmp_path, capsys):
    """The server goes down after the first checkpoint: the run stops once retry_for is spent, exit 1, with
    the --resume line; resumed with the server at another address (the real one, not the stand-in) and
    other request options, it finishes from its checkpoint and records the new address."""
    from rlprompt.train import main as train_main

    run_dir = tmp_path / "run"
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _DiesAfterCheckpoint)
    proxy.run_dir, proxy.target = run_dir, vllm_url
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    task = write_task(tmp_path, "tiny", [("a joy .", 1), ("a mess .", 0), ("lovely .", 1), ("dull .", 0)])
    settings = ["total_timesteps=160", "evaluations=4", "env.num_envs=4", "env.prompt_length=2",
                "env.examples_per_reward=4", "rl.n_steps=2", "rl.batch_size=8", "vocab.size=50",
                "candidates_per_eval=1", "top_k_report=1", "ensemble=1", f"task.name={task}",
                "task.test_examples=8"]  # fmt: skip
    through_proxy = server_name(f"http://127.0.0.1:{proxy.server_address[1]}/v1", retry_for=1)
    argv = ["--quiet", "--run-dir", str(run_dir), "--set", f"model={through_proxy}"]
    for setting in settings:
        argv += ["--set", setting]
    try:
        with pytest.raises(SystemExit) as done:
            run_cli(train_main, argv)
    finally:
        proxy.shutdown()
        proxy.server_close()
    err = capsys.readouterr().err
    assert done.value.code == 1, err
    assert "HTTP 503" in err and "(retried for 1 s)" in err and f"--resume {run_dir}" in err, err
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
    resumed = server_name(vllm_url, concurrency=2)
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, ["--quiet", "--resume", str(run_dir), "--set", f"model={resumed}"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == 160 and not result.get("interrupted"), result
    assert "concurrency=2" in (run_dir / "config.yaml").read_text()


def test_a_gradient_method_on_a_server_model_is_refused_before_anything_runs(vllm_url, tmp_path, capsys):
    from rlprompt.train import main as train_main

    argv = ["--quiet", "--run-dir", str(tmp_path / "run"), "--set", f"model={server_name(vllm_url)}",
            "--set", "method=lora"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(train_main, argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "method 'lora' needs a differentiable forward pass" in err and "openai backend" in err
    assert not (tmp_path / "run").exists(), "nothing written"


class _NoLogprobs(BaseHTTPRequestHandler):
    """A LOCAL STAND-IN, not vLLM: an OpenAI-style server that answers completions without log-probs."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self._send({"data": [{"id": "stand-in"}]})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send({"choices": [{"index": 0, "text": " great", "logprobs": None}]})

    def _send(self, payload):
        send_json(self, payload)

    def log_message(self, *args):
        pass


def test_a_server_without_logprobs_is_refused(smol):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoLogprobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with pytest.raises(RLPromptError, match=r"returned no log-probs for 'stand-in'"):
            load_task_model(f"openai:{url}#tokenizer=smollm2-135m")
    finally:
        server.shutdown()
        server.server_close()


def test_server_model_names_are_checked():
    from rlprompt.backends.openai import ServerSpec

    spec = ServerSpec.parse("openai:http://h:1/v1/#model=m&tokenizer=t&key_env=K&route=echo&concurrency=2")
    assert (spec.base_url, spec.model, spec.tokenizer, spec.key_env, spec.route, spec.concurrency) == (
        "http://h:1/v1", "m", "t", "K", "echo", 2)  # fmt: skip
    bad_names = [("openai:ftp://h/v1", "base URL"), ("openai:http://h/v1#route=fast", "route must be"),
                 ("openai:http://h/v1#batch=0", "batch must be a positive integer")]  # fmt: skip
    for bad, message in bad_names:
        with pytest.raises(RLPromptError, match=message):
            ServerSpec.parse(bad)


def test_the_chat_route_approximates_from_the_first_tokens_top_logprobs(vllm_url, smol, capsys):
    """route=chat reads the top-20 first-token log-probs of a chat completion. Checked against the exact
    route on the same chat-formatted text (the tokenizer's own chat template, which vLLM applies too): a
    verbalizer found in the top 20 gets its exact log-prob (to 1e-3), one outside gets the floor, which is
    at least its exact log-prob. SmolLM2-135M-Instruct starts its answers with "I", "The", "A", ... and
    never puts "great" or "terrible" in its top 20, so the verbalizers here are words it does start with
    (and a third it does not)."""
    from rlprompt.backends.openai import ServerScorer

    task = load_task("sst-2")
    examples = task.examples("dev")[:6]
    words = ["I", "The", "terrible"]
    chat = ServerScorer(load_task_model(server_name(vllm_url, route="chat")), "{sentence} {prompt}", words,
                        prompt_budget=8)  # fmt: skip
    assert "approximation" in capsys.readouterr().err
    approximate = chat.score(["It was"], examples)[0]
    exact_lm = load_task_model(server_name(vllm_url, route="label_ids"))
    word_ids = [smol.encode(w)[0] for w in words]  # no leading space: the start of the answer
    inside = []
    for ex, values in zip(examples, approximate, strict=True):
        text = smol.decode(list(chat._encoded_example(ex).head) + list(chat.prompt_ids("It was")))
        message = [{"role": "user", "content": text.strip()}]
        formatted = smol.tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
        ids = list(smol.tokenizer(formatted, add_special_tokens=False)["input_ids"])
        payload = {
            "model": exact_lm.served,
            "prompt": [ids],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 1,
            "logprob_token_ids": word_ids,
            "return_tokens_as_token_ids": True,
        }
        top = exact_lm.client.post("/completions", payload)["choices"][0]["logprobs"]["top_logprobs"][-1]
        exact = np.array([top[f"token_id:{i}"] for i in word_ids])
        found = np.abs(values - exact) < 1e-3
        assert (found | (values >= exact - 1e-3)).all(), (values, exact)
        inside.append(found)
    inside = np.array(inside)
    assert inside[:, :2].mean() > 0.5, "the words it starts with are found, with their exact log-probs"
    assert not inside[:, 2].any(), "'terrible' never is: it gets the floor"


def test_style_transfer_generates_and_scores_fluency_through_the_server(vllm_url, smol, tmp_path):
    """Rewrites come from the server (seeded, cut at the closing quote) and fluency from its echoed
    log-probs; a tiny style-transfer run goes through the same endpoint end to end."""
    import json

    from rlprompt.config import load_train_config
    from rlprompt.driver import train
    from rlprompt.perplexity import sentence_perplexities
    from rlprompt.style import Rewriter

    server = load_task_model(server_name(vllm_url))
    rewriter = Rewriter(server, max_new_tokens=12)
    assert rewriter.rewrite("Repeat the sentence:", ["the food was cold ."], greedy=True) == [
        ["The food was cold."]
    ]
    inputs = ["the food was cold .", "the staff was rude ."]
    first = rewriter.rewrite("Rewrite the sentence to be positive:", inputs, samples=3, seed=1)
    assert [len(s) for s in first] == [3, 3] and all('"' not in r for rs in first for r in rs)
    assert first == rewriter.rewrite("Rewrite the sentence to be positive:", inputs, samples=3, seed=1)
    assert rewriter.tokens_generated > 0
    sentences = ["the food was great and the staff was friendly .", "staff the friendly great was . food"]
    # Different kernels and batch shapes: equal to a relative 1e-3 (measured: 1e-5).
    remote, local = sentence_perplexities(server, sentences), sentence_perplexities(smol, sentences)
    np.testing.assert_allclose(remote, local, rtol=1e-3)

    config = load_train_config(None, [
        f"model={server_name(vllm_url)}", "task.name=yelp-sentiment", "total_timesteps=16",
        "evaluations=2", "env.prompt_length=2", "env.num_envs=4", "env.examples_per_reward=2", "rl.n_steps=2",
        "rl.batch_size=8", "rl.n_epochs=1", "style.samples=2", "style.dev_inputs=4", "style.test_inputs=8",
        "style.max_new_tokens=12", "policy.adapter_hidden=32",
    ])  # fmt: skip
    train(config, progress=False, run_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "style_eval.json").read_text(encoding="utf-8"))
    assert list(report["prompts"]) == ["human reference", "input copied", "learned", "empty", "manual"]
    assert 0 <= report["prompts"]["learned"]["joint"] <= 100
