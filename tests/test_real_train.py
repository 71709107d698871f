"""`dpominer train` on the real SmolLM2-135M-Instruct with real mined pairs; the result served by vLLM.
Marked `real`: `make test` runs it after the fast suite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.cli import app
from dpominer.models import resolve_model
from dpominer.pairing import PairRunConfig, run_pair

pytestmark = pytest.mark.real
EXAMPLES = Path(__file__).parents[1] / "examples"


def assert_vllm_serves(model_dir: Path, tmp_path: Path, env: dict) -> None:
    """`dpominer sample --backend vllm` loads the trained folder and writes non-empty candidates."""
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "q", "messages": [
        {"role": "user", "content": "Transcribe exactly: The quick brown fox jumps over the lazy dog."}]}])
    proc = subprocess.run([sys.executable, "-m", "dpominer", "sample", str(docs), "-o", str(tmp_path / "c.jsonl"),
                           "--model", str(model_dir), "--backend", "vllm", "-n", "2", "--max-tokens", "24",
                           "--max-model-len", "1024"], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = read_jsonl(tmp_path / "c.jsonl")
    assert record["backend"] == "vllm" and all(c["text"].strip() for c in record["candidates"])


def test_lora_dpo_on_real_pairs_gives_a_model_vllm_serves(tmp_path, monkeypatch):
    model = resolve_model("smollm2-135m-instruct")
    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))  # a fresh reference-log-prob cache
    pairs = tmp_path / "pairs.jsonl"
    run_pair(EXAMPLES / "candidates.jsonl", pairs, PairRunConfig())
    degenerate = [r for r in read_jsonl(pairs) if r["reason"] == "rejected_degenerate"][:4]
    write_jsonl(pairs, degenerate)
    out = tmp_path / "dpo"
    result = CliRunner().invoke(app, ["train", str(pairs), "-m", model, "-o", str(out), "--lora", "--merge",
                                      "--max-steps", "3", "--batch-size", "2", "--lr", "2e-4", "--max-length", "768",
                                      "--save-every", "0", "--warmup-ratio", "0"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "metrics.jsonl")
    # the real chat template passes the boundary checks, and policy == reference at step 1
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    summary = json.loads((out / "dpominer.meta.json").read_text())["summary"]
    assert summary["train_pairs"] == 4 and not summary["truncation"]["dropped"]

    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert trained.config.model_type == "llama" and not (out / "adapter_config.json").exists()

    assert_vllm_serves(out, tmp_path, os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})


def test_fsdp_on_two_processes_gives_one_model_folder_vllm_serves(tmp_path):
    """Full fine-tune sharded over 2 CPU processes (gloo); the gathered output is an ordinary folder."""
    model = resolve_model("smollm2-135m-instruct")
    pairs = tmp_path / "pairs.jsonl"
    run_pair(EXAMPLES / "candidates.jsonl", pairs, PairRunConfig())
    write_jsonl(pairs, [r for r in read_jsonl(pairs) if r["reason"] == "rejected_degenerate"][:4])
    out = tmp_path / "fsdp"
    env = os.environ | {"DPOMINER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
                        "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    train = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "dpominer", "train", str(pairs), "-m", model, "-o", str(out), "--fsdp",
                            "--max-steps", "2", "--batch-size", "1", "--lr", "1e-5", "--max-length", "512",
                            "--save-every", "0", "--warmup-ratio", "0"], env=env, capture_output=True, text=True,
                           timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    assert read_jsonl(out / "metrics.jsonl")[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert_vllm_serves(out, tmp_path, env)
