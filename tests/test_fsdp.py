"""`dpominer train --fsdp` (FSDP2, gloo, 2 processes on the CPU) and `--plan`, on the tiny model."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from test_train import COMMON, _cli, losses, make_pairs, run

from dpominer.train.config import LoraConfig, TrainConfig
from dpominer.train.plan import GIB, make_plan, model_size


@pytest.fixture
def pairs(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    return make_pairs(tmp_path / "pairs.jsonl")


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "dpominer", "train", *map(str, args)]


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"DPOMINER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_fsdp_matches_one_process_and_resumes_after_a_rank_is_killed(tiny_model, pairs, tmp_path):
    env = _env(tmp_path)
    args = (pairs, "-m", tiny_model, "--max-steps", "6", "--save-every", "2", *COMMON)
    subprocess.run(_cli(*args, "-o", tmp_path / "one", "--grad-accum", "2"), check=True, env=env, capture_output=True)

    out = tmp_path / "fsdp"
    proc = subprocess.Popen(torchrun(*args, "--fsdp", "-o", out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "step-0000002").exists() and time.time() < deadline:
        time.sleep(0.01)
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies; torchrun stops the other
    assert proc.wait(timeout=120) != 0, "the run ended before a rank could be killed"
    assert not (out / "config.json").exists()
    assert (out / "checkpoints" / "step-0000002" / "sharded").is_dir()  # one DCP folder, a file per rank

    resumed = subprocess.run(torchrun(*args, "--fsdp", "-o", out, "--resume"), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    meta = json.loads((out / "dpominer.meta.json").read_text())
    assert meta["world_size"] == 2 and meta["config"]["fsdp"] and meta["summary"]["resumed_from"] in (2, 4)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, 7))
    # 2 processes × --grad-accum 1 take the steps of 1 process × --grad-accum 2
    assert losses(out) == pytest.approx(losses(tmp_path / "one"), abs=1e-4)
    assert losses(out)[-1] < losses(out)[0]
    sharded, single = _weights(out), _weights(tmp_path / "one")  # an ordinary folder transformers loads
    assert sharded.keys() == single.keys()
    for name, weight in single.items():
        torch.testing.assert_close(sharded[name], weight, rtol=0, atol=1e-4, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(sharded.values(), _weights(tiny_model).values(), strict=True))


def test_fsdp_lora_bf16_checkpointing_and_live_reference(tiny_model, pairs, tmp_path):
    out = tmp_path / "lora"
    proc = subprocess.run(torchrun(pairs, "-m", tiny_model, "--max-steps", "3", "--fsdp", "--lora", "--lora-r", "4",
                                   "--merge", "--ref", "model", "--dtype", "bf16", "--gradient-checkpointing",
                                   "--eval-fraction", "0.3", *COMMON[:2], "--lr", "1e-2", *COMMON[4:], "-o", out),
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(out / "metrics.jsonl")
    # the adapter switched off is the reference, under the same sharding and bf16: step 1 is exactly log 2
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(math.isfinite(r["loss"]) for r in rows) and "eval/loss" in rows[-1]
    merged, base = _weights(out), _weights(tiny_model)
    assert merged.keys() == base.keys()  # merged into plain weights: no adapter left
    assert any(not torch.equal(merged[k], base[k]) for k in base)


def test_fsdp_without_torchrun_and_a_reference_that_cannot_fit_say_so_before_work(tiny_model, pairs, tmp_path,
                                                                                 monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "out", "--fsdp")
    assert code == 1 and "torchrun --nproc-per-node N -m dpominer train" in output and "--fsdp" in output
    assert not (tmp_path / "out").exists()
    # a GPU between what FSDP needs without and with a live reference (whatever the batch): it says so
    cfg = TrainConfig(model=str(tiny_model), fsdp=True)
    alone = make_plan(cfg, 1, GIB, bf16=False).fsdp.static()
    with_ref = make_plan(cfg.model_copy(update={"ref": "model"}), 1, GIB, bf16=False).fsdp.static()
    assert with_ref > alone
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "out", "--fsdp", "--ref", "model",
                       "--gpu-memory", str((alone + with_ref) / 2 / 0.9 / GIB))
    assert code == 1 and "--ref model copy" in output and "--ref precompute" in output, output
    assert not (tmp_path / "out").exists()


def test_plan_numbers_are_the_formula_worked_by_hand(tiny_model, pairs, tmp_path):
    """The tiny Llama: V from its config, H=64, I=128, 2 layers, 4 heads of 16, 2 key/value heads (K=32),
    tied embeddings. Per layer q 64·64 + k 64·32 + v 64·32 + o 64·64 + gate/up/down 3·64·128 + 2 norms·64
    = 36 992; P = 64·V + 2·36 992 + 64 (final norm). Root R = 64·V + 64, largest unit U = 36 992.
    LoRA r=4 on every linear but the head: r·(in+out) = 4·(128+96+96+128+192+192+192) = 4 096 per layer.
    2 GPUs, batch 2, max_length 128: S = 2·2·128 = 512 tokens; per token and layer 9·64 + 2·32 + 4·128 = 1 152.
    """
    vocab = json.loads((Path(tiny_model) / "config.json").read_text())["vocab_size"]
    P, U, R = 64 * vocab + 2 * 36_992 + 64, 36_992, 64 * vocab + 64  # noqa: N806
    cfg = TrainConfig(model=str(tiny_model), batch_size=2, max_length=128, ref="model")
    size = model_size(cfg)
    assert (size.params, size.trainable, size.largest_unit, size.root) == (P, P, U, R)
    head = 512 * 64 * 4 + 3 * 512 * vocab * 4
    plan = make_plan(cfg, gpus=2, gpu_bytes=GIB, bf16=False, size=size)
    assert (plan.ddp.weights, plan.ddp.grads, plan.ddp.optimizer, plan.ddp.reference) == (4 * P, 4 * P, 8 * P, 4 * P)
    assert plan.ddp.activations == 512 * 2 * 1152 * 4 + head
    assert plan.ddp.activations_checkpointed == 512 * 2 * 64 * 4 + 512 * 1152 * 4 + head
    assert plan.fsdp.weights == 4 * P / 2 + 4 * (R + 2 * U)
    assert (plan.fsdp.grads, plan.fsdp.optimizer, plan.fsdp.reference) == (4 * P / 2 + 4 * U, 8 * P / 2, 4 * P / 2)
    assert plan.choice() == "ddp"  # a GiB holds the tiny model either way

    lora = make_plan(cfg.model_copy(update={"lora": LoraConfig(enabled=True, r=4)}), 2, GIB, bf16=True)
    T = 2 * 4_096  # noqa: N806
    assert (lora.size.params, lora.size.trainable) == (P + T, T)
    assert (lora.ddp.weights, lora.ddp.grads, lora.ddp.optimizer, lora.ddp.reference) == (
        4 * (P + T) + 2 * T, 4 * T, 8 * T, 0)  # LoRA's reference is the policy with its adapter off
    assert lora.ddp.activations == 512 * 2 * 1152 * 2 + head  # bf16: 2 bytes an activation

    # a GPU between the two totals: only FSDP fits, and the CLI says so on its last line
    between = (plan.fsdp.total(False) + plan.ddp.total(False)) / 2 / 0.9 / GIB
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "plan", "--plan", "--gpus", "2", "--batch-size", "2",
                       "--max-length", "128", "--ref", "model", "--gpu-memory", str(between))
    assert code == 0 and output.strip().splitlines()[-1] == "choose: fsdp", output
    assert not (tmp_path / "plan").exists()
