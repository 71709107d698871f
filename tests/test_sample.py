from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import documents, read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.backends import LoopStop
from dpominer.cli import app
from dpominer.degeneration import detect
from dpominer.partial import recover as recover_partial
from dpominer.sample import derive_seed, shard_of

runner = CliRunner()
FAST = ["--backend", "hf", "--threads", "1", "-n", "3", "--max-tokens", "24", "--temperature", "1.0"]


def sample(*args):
    result = runner.invoke(app, ["sample", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    return result


def by_id(path):
    return {r["id"]: r for r in read_jsonl(path)}


def test_sample_writes_one_record_per_document(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(4))
    out = tmp_path / "new" / "dir" / "c.jsonl"  # output folders are made as needed
    sample(docs, "-o", out, "--model", tiny_model, *FAST)
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["d0", "d1", "d2", "d3"]
    chat, raw = records[0], records[1]
    assert chat["rendered_prompt"].startswith("<|im_start|>user\nCopy: ") and chat["rendered_prompt"].endswith(
        "<|im_start|>assistant\n")
    assert "rendered_prompt" not in raw  # a plain prompt goes in as it is
    for record in records:
        assert len(record["candidates"]) == 3 and record["sampling"]["temperature"] == 1.0
        assert record["backend"] == "hf" and record["model"] == str(tiny_model)
        for cand in record["candidates"]:
            assert cand["finish_reason"] in ("stop", "length") and cand["num_tokens"] == len(cand["token_ids"])
            assert cand["num_tokens"] <= 24
    meta = json.loads((out.parent / "c.jsonl.meta.json").read_text())
    assert meta["engine"]["backend"] == "hf" and meta["config"]["sampling"]["n"] == 3 and "torch" in meta["versions"]
    assert meta["summary"]["candidates"] == 12 and not (out.parent / "c.jsonl.partial").exists()
    # the run record names the documents it read: their size and hash, not those of nothing
    assert meta["inputs"][0]["bytes"] == docs.stat().st_size
    assert meta["inputs"][0]["blake2b"] == hashlib.blake2b(docs.read_bytes(), digest_size=16).hexdigest()


def test_same_seed_same_texts_other_seed_other_texts(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(3))
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        sample(docs, "-o", tmp_path / f"{name}.jsonl", "--model", tiny_model, "--seed", seed, *FAST)
    texts = {name: [[c["text"] for c in r["candidates"]] for r in read_jsonl(tmp_path / f"{name}.jsonl")]
             for name in "abc"}
    assert texts["a"] == texts["b"] and texts["a"] != texts["c"]
    assert derive_seed("d0", 0, 1) == derive_seed("d0", 0, 1) != derive_seed("d0", 1, 1)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(60))
    args = ["--model", str(tiny_model), *FAST, "--max-tokens", "48", "--chunk-size", "1"]
    sample(docs, "-o", tmp_path / "full.jsonl", *args)

    out = tmp_path / "killed.jsonl"
    partial = tmp_path / "killed.jsonl.partial"
    proc = subprocess.Popen([sys.executable, "-m", "dpominer", "sample", str(docs), "-o", str(out), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or partial.read_bytes().count(b"\n") < 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines_at_kill = partial.read_bytes().count(b"\n")
    assert 5 <= lines_at_kill < 60 and not out.exists()
    with partial.open("ab") as handle:  # and a torn last line, as a kill mid-write leaves
        handle.write(b'{"id": "d59", "candidates": [{"ind')

    result = runner.invoke(app, ["sample", str(docs), "-o", str(out), *args])
    assert result.exit_code == 1 and "pass --resume" in result.output
    sample(docs, "-o", out, *args, "--resume")
    assert by_id(out) == by_id(tmp_path / "full.jsonl")  # nothing lost, nothing twice, same texts
    assert len(read_jsonl(out)) == 60
    meta = json.loads((tmp_path / "killed.jsonl.meta.json").read_text())
    assert meta["summary"]["resumed"] == lines_at_kill


def test_loop_stop_rule_by_hand():
    rule = LoopStop(min_pattern=2, max_pattern=4, min_count=3)
    assert rule.matches([9, 1, 2, 1, 2, 1, 2]) == 2
    assert rule.matches([1, 2, 1, 2, 1]) is None  # only 2.5 copies
    assert rule.matches([7, 7, 7, 7, 7, 7]) == 2  # a 1-token run is below min_pattern, its pairs are not
    assert rule.matches([5, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == 3
    assert rule.matches(list(range(20))) is None


def test_recover_partial_cuts_a_torn_line(tmp_path):
    partial = tmp_path / "x.partial"
    partial.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "cand')
    assert recover_partial(partial) == {"a", "b"}
    assert partial.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'


def test_shards_cover_every_document_once_and_merge_reports_gaps(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(9))
    sample(docs, "-o", tmp_path / "full.jsonl", "--model", tiny_model, *FAST)
    shards = []
    for index in range(3):
        shards.append(tmp_path / f"s{index}.jsonl")
        sample(docs, "-o", shards[-1], "--model", tiny_model, "--shard", f"{index}/3", *FAST)
    sizes = [len(read_jsonl(s)) for s in shards]
    assert sum(sizes) == 9 and all(shard_of(r["id"], 3) == i for i, s in enumerate(shards) for r in read_jsonl(s))
    merged = tmp_path / "merged.jsonl"
    result = runner.invoke(app, ["merge", *map(str, shards), "-o", str(merged), "--docs", str(docs), "--strict"])
    assert result.exit_code == 0, result.output
    assert by_id(merged) == by_id(tmp_path / "full.jsonl")  # sharding changes no text

    result = runner.invoke(app, ["merge", str(shards[0]), str(shards[0]), str(shards[1]), "-o", str(merged),
                                 "--docs", str(docs), "--strict"])
    assert result.exit_code == 1  # and nothing written: the first merge's file and record stay
    assert f"--strict: {sizes[0]} duplicate ids" in result.output and f"{sizes[2]} documents missing" in result.output
    assert by_id(merged) == by_id(tmp_path / "full.jsonl")
    assert json.loads((tmp_path / "merged.jsonl.meta.json").read_text())["summary"]["duplicates"] == 0


def test_too_long_documents_are_recorded_not_fatal(tiny_model, tmp_path):
    rows = documents(2, messages_every=1) + [{"id": "long", "messages": [{"role": "user", "content": "word " * 2000}]}]
    docs = write_jsonl(tmp_path / "docs.jsonl", rows)
    result = sample(docs, "-o", tmp_path / "c.jsonl", "--model", tiny_model, *FAST)
    long = by_id(tmp_path / "c.jsonl")["long"]
    assert long["candidates"] == [] and "the model's context is 256" in long["error"]
    assert "documents with errors" in result.output
    pairs = runner.invoke(app, ["pair", str(tmp_path / "c.jsonl"), "-o", str(tmp_path / "p.jsonl"),
                                "--stats-json", str(tmp_path / "s.json")])
    assert pairs.exit_code == 0, pairs.output
    assert json.loads((tmp_path / "s.json").read_text())["documents_without_pair"]["sample_error"] == 1


def test_stop_on_loop_stops_loops_early_and_they_stay_degenerate(tiny_model, tmp_path):
    # A random tiny model decodes greedily into loops: the early stop must cut them short.
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(6))
    common = ["--model", str(tiny_model), "--backend", "hf", "-n", "1", "--temperature", "0", "--max-tokens", "160"]
    sample(docs, "-o", tmp_path / "full.jsonl", *common)
    sample(docs, "-o", tmp_path / "stopped.jsonl", *common, "--stop-on-loop")
    full, stopped = by_id(tmp_path / "full.jsonl"), by_id(tmp_path / "stopped.jsonl")
    early = [doc_id for doc_id, r in stopped.items() if r["candidates"][0]["finish_reason"] == "repetition"]
    assert early, "no loop was stopped"
    for doc_id in early:
        cut, whole = stopped[doc_id]["candidates"][0], full[doc_id]["candidates"][0]
        assert cut["num_tokens"] < whole["num_tokens"]
        assert whole["token_ids"][: cut["num_tokens"]] == cut["token_ids"]  # the same decode, stopped early
        verdict = detect(cut["text"], token_ids=cut["token_ids"], finish_reason="repetition")
        assert verdict.verdict == "degenerate"


def test_bad_flags_name_the_flag(tiny_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(2))
    for flags, message in ((["--shard", "3/2"], "--shard: must be I/N"),
                           (["--backend", "openai"], "--base-url: needed with --backend openai"),
                           (["--top-p", "0"], "--top-p: Input should be greater than 0"),
                           (["--model", "./nowhere"], "--model: ./nowhere does not exist")):
        result = runner.invoke(app, ["sample", str(docs), "-o", str(tmp_path / "c.jsonl"), *flags])
        assert result.exit_code == 1 and message in result.output, result.output
    result = runner.invoke(app, ["sample", str(docs), "-o", str(tmp_path / "c.jsonl"), "--temperature", "-1"])
    assert result.exit_code == 2 and "Invalid value for '--temperature'" in result.output  # out of range: parse time
    assert not (tmp_path / "c.jsonl").exists()


def test_pairs_from_sampled_candidates_train_on_the_sampled_tokens(tiny_model, tmp_path):
    """sample → pair → train's tokenisation: a pair carries the rendered prompt and the candidates' token
    ids, and training uses exactly those ids, behind exactly the prompt ids the model was given."""
    from transformers import AutoTokenizer

    from dpominer.jsonl import iter_jsonl
    from dpominer.pairing import PairRunConfig, run_pair
    from dpominer.records import Pair
    from dpominer.train.data import tokenize_pair

    docs = write_jsonl(tmp_path / "docs.jsonl", documents(4, messages_every=1))
    sample(docs, "-o", tmp_path / "c.jsonl", "--model", tiny_model, *FAST)
    run_pair(tmp_path / "c.jsonl", tmp_path / "pairs.jsonl", PairRunConfig())
    records = by_id(tmp_path / "c.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs = list(iter_jsonl(tmp_path / "pairs.jsonl", Pair, unique_ids=False))
    assert pairs and all(p.conversational for p in pairs)
    for pair in pairs:
        record = records[pair.id]
        sampled = record["candidates"][pair.rejected_index]
        ex = tokenize_pair(pair, tokenizer, loop_copies=4)
        assert ex.sources["rejected"] == "sampled" and pair.rendered_prompt == record["rendered_prompt"]
        assert ex.rejected_ids[:len(sampled["token_ids"])] == sampled["token_ids"]
        assert len(ex.prompt_ids) == record["prompt_tokens"]


def test_every_registered_backend_is_a_backend(tiny_model):
    from dpominer.backends import BACKENDS, Backend, make_backend
    from dpominer.backends.openai import OpenAIBackend
    from dpominer.sample import SampleConfig

    assert set(BACKENDS) == {"vllm", "hf", "openai"}
    hf = make_backend(SampleConfig(model=str(tiny_model), backend="hf", threads=1))
    assert isinstance(hf, Backend) and hf.name == "hf" and hf.tokenizer is not None
    server = make_backend(SampleConfig(model="served", backend="openai", base_url="http://127.0.0.1:9"))
    assert isinstance(server, OpenAIBackend) and isinstance(server, Backend) and server.tokenizer is None

    class NoTokenizer:  # what the protocol asks for is checked, not assumed
        name = "x"

        def generate(self, requests, spec): ...

        def max_context(self): ...

        def describe(self): ...

    assert not isinstance(NoTokenizer(), Backend)


def test_logprobs_are_stored_when_asked_and_match_a_forward_pass(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    docs = write_jsonl(tmp_path / "docs.jsonl", documents(2))
    sample(docs, "-o", tmp_path / "plain.jsonl", "--model", tiny_model, *FAST)
    assert all("token_logprobs" not in c for r in read_jsonl(tmp_path / "plain.jsonl") for c in r["candidates"])
    sample(docs, "-o", tmp_path / "lp.jsonl", "--model", tiny_model, *FAST, "--logprobs")
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for record in read_jsonl(tmp_path / "lp.jsonl"):
        for cand in record["candidates"]:
            lps = cand["token_logprobs"]
            assert len(lps) == len(cand["token_ids"]) and all(lp <= 0 for lp in lps)
            assert all(round(lp, 2) == lp for lp in lps)  # stored with 2 decimals
            assert cand["cumulative_logprob"] == pytest.approx(sum(lps), abs=0.01 * len(lps) + 1e-6)
    # the first candidate of the raw-prompt document, checked against an independent forward pass
    from transformers import AutoTokenizer

    record = read_jsonl(tmp_path / "lp.jsonl")[1]
    cand = record["candidates"][0]
    ids = AutoTokenizer.from_pretrained(tiny_model)(record["prompt"])["input_ids"]
    full = torch.tensor([ids + cand["token_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(full).logits[0, len(ids) - 1 : -1].float(), -1)
    expected = logps.gather(1, full[0, len(ids) :, None])[:, 0].tolist()
    assert cand["token_logprobs"] == pytest.approx([round(x, 2) for x in expected], abs=0.011)
