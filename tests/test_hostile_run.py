"""Hostile use, part 2: dead and flaky servers (a tiny OpenAI-compatible server on loopback), resume with
changed settings, a second run while the first holds the output, a full disk under a partial file, eval
--resume, pairs training must refuse, crafted trainer state, models that cannot load."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import documents, read_jsonl, write_jsonl
from test_hostile import ROOT, cli, one_line_error, snapshot
from typer.testing import CliRunner

from dpominer.cli import app
from dpominer.guard import RunLock
from dpominer.jsonl import InputError
from dpominer.train import checkpoint

runner = CliRunner()


class FakeServer:
    """/v1/completions and /v1/chat/completions on 127.0.0.1: deterministic texts (or judge verdicts);
    ``fail`` holds document markers answered with HTTP 500, ``flaky`` answers each prompt's first try 503."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.flaky = False
        self.delay = 0.0
        self.seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body.get("prompt") or json.dumps(body.get("messages"))
                server.seen[text] = server.seen.get(text, 0) + 1
                time.sleep(server.delay)
                if any(marker in text for marker in server.fail) or (server.flaky and server.seen[text] == 1):
                    self.send_response(500 if server.fail else 503)
                    self.end_headers()
                    return
                if "messages" in body:
                    verdict = {"rationale": "fine", "criteria": {"completeness": 8, "faithfulness": 9,
                                                                 "formatting": 7, "language": 10}}
                    choices = [{"message": {"content": json.dumps(verdict)}, "finish_reason": "stop"}]
                else:
                    choices = [{"text": f"{body['prompt'][-30:]} #{body['seed']}.{i}", "finish_reason": "stop"}
                               for i in range(body["n"])]
                payload = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.httpd.shutdown()


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def docs_file(tmp_path: Path, n: int = 6) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "prompt": f"Copy document d{i}: text {i}."}
                                                 for i in range(n)])


def sample_args(docs: Path, out: Path, url: str, *extra) -> list:
    return ["sample", docs, "-o", out, "-m", "served", "--backend", "openai", "--base-url", url, "-n", "2",
            "--retries", "1", "--seed", "7", "--chunk-size", "3", *extra]


def ok(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------ dead and flaky servers

def test_a_dead_server_fails_the_run_and_resume_samples_what_failed(tmp_path, server):
    docs, out = docs_file(tmp_path), tmp_path / "c.jsonl"
    one_line_error(cli(*sample_args(docs, out, dead_url())), "cannot reach", "nothing written")
    partial = tmp_path / "c.jsonl.partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]  # no fake record, nothing at all
    server.fail = {"d1", "d4"}  # up again, but failing two documents (one per chunk)
    one_line_error(cli(*sample_args(docs, out, server.url)), "d1", "HTTP 500", "keeps the 2", "--resume")
    one_line_error(cli(*sample_args(docs, out, server.url)), "left by an interrupted run; pass --resume")
    assert sorted(r["id"] for r in read_jsonl(partial)) == ["d0", "d2"]
    server.fail = set()
    ok(*sample_args(docs, out, server.url, "--resume"))
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"d{i}" for i in range(6)]
    assert all(c["finish_reason"] == "stop" and c["text"] for r in records for c in r["candidates"])


def test_a_flaky_server_is_retried_with_backoff(tmp_path, server):
    server.flaky = True
    docs, out = docs_file(tmp_path, 3), tmp_path / "c.jsonl"
    ok(*sample_args(docs, out, server.url))
    assert all(n == 2 for n in server.seen.values()) and len(read_jsonl(out)) == 3


def test_a_dead_judge_fails_the_run_and_resume_judges_the_rest(tmp_path, server):
    cands = tmp_path / "c.jsonl"
    ok(*sample_args(docs_file(tmp_path), cands, server.url))
    judged = tmp_path / "j.jsonl"
    args = ["score", cands, "-o", judged, "--judge", "served", "--judge-backend", "openai", "--retries", "0"]
    one_line_error(cli(*args, "--judge-base-url", dead_url()), "cannot reach", "--resume")
    assert not judged.exists() and not list(tmp_path.glob("j.jsonl*"))  # no judgement written, no fake one
    ok(*args, "--judge-base-url", server.url, "--resume")
    scores = [c["judge"]["score"] for r in read_jsonl(judged) for c in r["candidates"]]
    assert len(scores) == 12 and all(0 < s <= 1 for s in scores)


# -------------------------------------------------------------------------- resume with other settings

@pytest.mark.parametrize(("change", "named"), [(["--seed", "8"], "sampling.seed was 7, now 8"),
                                               (["-n", "3"], "sampling.n was 2, now 3"),
                                               (["-m", "other"], "model was 'served', now 'other'"),
                                               (["--temperature", "0"], "sampling.temperature was 0.7, now 0.0")])
def test_sample_resume_refuses_other_settings(tmp_path, server, change, named):
    docs, out = docs_file(tmp_path), tmp_path / "c.jsonl"
    server.fail = {"d4"}
    one_line_error(cli(*sample_args(docs, out, server.url)), "HTTP 500")
    server.fail = set()
    partial_before = (tmp_path / "c.jsonl.partial").read_bytes()
    one_line_error(cli(*sample_args(docs, out, server.url, "--resume"), *change), named)
    assert (tmp_path / "c.jsonl.partial").read_bytes() == partial_before
    ok(*sample_args(docs, out, server.url, "--resume"))  # the same settings (another server is fine)
    one_line_error(cli(*sample_args(docs, out, server.url, "--resume"), *change), named)  # a finished file too


@pytest.mark.parametrize("change", ["model", "rubric"])
def test_judge_resume_refuses_another_judge_or_rubric(tmp_path, server, change):
    cands = tmp_path / "c.jsonl"
    ok(*sample_args(docs_file(tmp_path, 40), cands, server.url))
    judged = tmp_path / "j.jsonl"
    args = ["score", cands, "-o", judged, "--judge-backend", "openai", "--retries", "0"]
    server.fail = {"d35"}  # in the second chunk of 32 records: the first stays in the partial
    one_line_error(cli(*args, "--judge", "served", "--judge-base-url", server.url), "d35", "HTTP 500")
    server.fail = set()
    assert len(read_jsonl(tmp_path / "j.jsonl.partial")) == 32
    rubric = tmp_path / "r.toml"
    rubric.write_text('task = "a summary"\n[[criteria]]\nname = "brevity"\ndescription = "short"\n')
    other = ["--judge", "judge-b"] if change == "model" else ["--judge", "served", "--rubric", rubric]
    named = "judge.model was 'served', now 'judge-b'" if change == "model" else "judge.rubric.criteria"
    one_line_error(cli(*args, *other, "--judge-base-url", server.url, "--resume"), named)
    ok(*args, "--judge", "served", "--judge-base-url", server.url, "--resume")
    assert len(read_jsonl(judged)) == 40


# ----------------------------------------------------------------------------- one run per output

def test_a_second_run_while_the_first_samples_is_refused_naming_it(tmp_path, server):
    server.delay = 0.3
    docs, out = docs_file(tmp_path, 30), tmp_path / "c.jsonl"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "dpominer", *map(str, sample_args(docs, out, server.url))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        lock = tmp_path / ".c.jsonl.lock"
        deadline = time.time() + 60
        while time.time() < deadline and f"pid {first.pid}" not in (lock.read_text() if lock.exists() else ""):
            time.sleep(0.05)
        for extra in ([], ["--resume"]):
            one_line_error(cli(*sample_args(docs, out, server.url, *extra)), "another dpominer run",
                           f"pid {first.pid}")
    finally:
        first.terminate()
        first.wait()
    # SIGTERM left the partial resumable: the rest is sampled once, nothing twice
    ok(*sample_args(docs, out, server.url, "--resume"))
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(f"d{i}" for i in range(30))


def test_judge_resume_while_locked_is_refused(tmp_path, server):
    cands = tmp_path / "c.jsonl"
    ok(*sample_args(docs_file(tmp_path), cands, server.url))
    lock = RunLock(tmp_path / "j.jsonl")
    try:
        one_line_error(cli("score", cands, "-o", tmp_path / "j.jsonl", "--judge", "served", "--judge-backend",
                           "openai", "--judge-base-url", server.url, "--resume"), f"pid {os.getpid()}")
    finally:
        lock.release()


# --------------------------------------------------------------------------- a full disk under a partial

def test_a_full_disk_keeps_the_partial_resumable(tmp_path, server):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "prompt": f"d{i} " + "long text " * 60}
                                                     for i in range(12)])
        out = disk / "c.jsonl"
        one_line_error(cli(*sample_args(docs, out, server.url)), "c.jsonl.partial", "ENOSPC", "--resume")
        assert not out.exists() and not [p for p in disk.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]
        subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
        ok(*sample_args(docs, out, server.url, "--resume"))
        assert sorted(r["id"] for r in read_jsonl(out)) == sorted(f"d{i}" for i in range(12))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ------------------------------------------------------------------------------------- eval --resume

def test_eval_resumes_from_the_models_partial(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(4))
    flags = ["-m", tiny_model, "--backend", "hf", "--max-tokens", "8"]
    # what eval's `sample` child writes uninterrupted (run here, where torch is loaded already)
    ok("sample", docs, "-o", tmp_path / "full.jsonl", *flags, "-n", "1", "--temperature", "0", "--seed", "0")
    full = read_jsonl(tmp_path / "full.jsonl")
    killed = tmp_path / "killed"
    killed.mkdir()
    lines = (tmp_path / "full.jsonl").read_bytes().splitlines(keepends=True)
    (killed / "model.candidates.jsonl.partial").write_bytes(b"".join(lines[:2]) + lines[2][:30])  # torn
    result = runner.invoke(app, ["eval", str(docs), "-o", str(killed), *map(str, flags)])
    assert result.exit_code == 1 and "rerun eval with --resume" in result.output
    ok("eval", docs, "-o", killed, *flags, "--resume")
    assert read_jsonl(killed / "model.candidates.jsonl") == full
    assert json.loads((killed / "eval.json").read_text())["models"][0]["documents"] == 4


# ------------------------------------------------------------------------------- pairs train refuses

BAD_PAIRS = [({"chosen": "good text", "rejected": ""}, "the rejected side is empty"),
             ({"chosen": "  \n\t", "rejected": "a loop a loop"}, "the chosen side is blank"),
             ({"chosen": "Cafe\u0301  ok", "rejected": "Café ok"}, "chosen and rejected are the same text"),
             ({"chosen": "good", "rejected": "x", "rejected_scores": {"finish_reason": "error"}},
              "the rejected side comes from a failed generation"),
             ({"chosen": [{"role": "assistant", "content": " "}], "rejected": [{"role": "assistant", "content": "b"}],
               "prompt": [{"role": "user", "content": "q"}]}, "the chosen side is blank")]


@pytest.mark.parametrize(("bad", "why"), BAD_PAIRS)
def test_train_refuses_pairs_it_cannot_learn_from(tiny_model, tmp_path, bad, why):
    good = {"prompt": "Copy:\n", "chosen": "the text", "rejected": "the the the the"}
    if isinstance(bad.get("chosen"), list):
        good = {"prompt": [{"role": "user", "content": "Copy"}], "chosen": [{"role": "assistant", "content": "t"}],
                "rejected": [{"role": "assistant", "content": "t t t"}]}
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [good, {"prompt": good["prompt"]} | bad])
    before = snapshot(tmp_path)
    one_line_error(cli("train", pairs, "-m", tiny_model, "-o", tmp_path / "out"), f"{pairs}:2: {why}")
    assert snapshot(tmp_path) == before


def test_train_skip_invalid_drops_and_counts_them(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    good = [{"prompt": f"Copy {i}:\n", "chosen": f"text number {i}", "rejected": f"{i} {i} {i} {i}"} for i in range(3)]
    rows = good + [{"prompt": "Copy:\n", **bad} for bad, _ in BAD_PAIRS[:4]] + [good[0]]  # and an exact copy
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    one_line_error(cli("train", pairs, "-m", tiny_model, "-o", tmp_path / "out"), ":4: the rejected side is empty")
    ok("train", pairs, "-m", tiny_model, "-o", tmp_path / "out", "--skip-invalid", "--max-steps", "1",
       "--batch-size", "2", "--threads", "1")
    summary = json.loads((tmp_path / "out" / "dpominer.meta.json").read_text())["summary"]
    assert summary["pairs_read"] == 3 and summary["skipped"] == {
        "rejected_blank": 1, "chosen_blank": 1, "chosen_equals_rejected": 1, "rejected_failed": 1, "duplicate": 1}


# ----------------------------------------------------------------------------- crafted trainer state

class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp") / f"dpominer-pwned-{os.getpid()}"


@pytest.mark.parametrize("payload", ["code", "object"])
def test_a_crafted_trainer_state_is_refused_not_run(tmp_path, payload):
    import random

    import torch

    folder = tmp_path / "step-0000001"
    folder.mkdir()
    real = {"step": 1, "rng": [{"python": random.getstate(), "torch": torch.get_rng_state()}],
            "optimizer": torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]).state_dict(),
            "config": {"beta": 0.1}, "data": "abc"}
    torch.save(real, folder / checkpoint.STATE)
    assert checkpoint.load_state(folder)["step"] == 1  # our own state loads weights-only
    bad = _RunsCode() if payload == "code" else {"step": 1, "extra": {1, 2}, "fn": print}
    with (folder / checkpoint.STATE).open("wb") as handle:
        pickle.dump(bad, handle)
    with pytest.raises(InputError, match="not a plain trainer state"):
        checkpoint.load_state(folder)
    assert not MARKER.exists()


# ---------------------------------------------------------------------------- models that cannot load

@pytest.mark.parametrize("kind", ["config_only", "no_tokenizer", "gguf_file", "offline_hub_id"])
def test_a_model_that_cannot_load_is_one_line(tiny_model, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_model / "config.json").read_bytes())
    if kind == "no_tokenizer":
        (folder / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    name = {"config_only": folder, "no_tokenizer": folder, "gguf_file": tmp_path / "m.gguf",
            "offline_hub_id": "nobody/no-such-model-xyz"}[kind]
    if kind == "gguf_file":
        Path(name).write_bytes(b"GGUF")
    why = {"config_only": "has no weights", "no_tokenizer": "has no tokenizer", "gguf_file": "a GGUF file",
           "offline_hub_id": "not in the Hugging Face cache"}[kind]
    docs = docs_file(tmp_path, 2)
    one_line_error(cli("sample", docs, "-o", tmp_path / "c.jsonl", "-m", name, "--backend", "hf"), f"--model {name}",
                   why)
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a ", "chosen": "b", "rejected": "c"}])
    one_line_error(cli("train", pairs, "-m", name, "-o", tmp_path / "out"), f"--model {name}", why)
