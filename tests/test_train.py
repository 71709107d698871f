"""`dpominer train` on the tiny model: log-prob parity, the CLI, resume after kill -9, DDP, LoRA, failures."""

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
from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.cli import app
from dpominer.train.logps import CompletionLogps, _HeadLogProb, _tree_inputs
from dpominer.train.loss import sequence_logps

PASSAGES = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"


def make_pairs(path: Path, n: int = 12) -> Path:
    """Pairs shaped like `dpominer pair` output: the chosen text vs a loop that starts after 40 chars."""
    texts = [json.loads(line)["text"][:160] for line in PASSAGES.open()][:n]
    rows = []
    for i, text in enumerate(texts):
        unit = " " + " ".join(text.split()[3:7])
        loop = text[:40] + unit * 8
        row = {"id": f"d{i}", "reason": "rejected_degenerate", "chosen_source": "reference", "rejected_index": 0,
               "chosen_scores": {"verdict": "clean"},
               "rejected_scores": {"verdict": "degenerate", "finish_reason": "length", "start_char": 40,
                                   "unit_len": len(unit), "copies": 8.0}}
        if i % 3:
            row |= {"prompt": [{"role": "user", "content": "Copy: " + text}],
                    "chosen": [{"role": "assistant", "content": text}],
                    "rejected": [{"role": "assistant", "content": loop}]}
        else:
            row |= {"prompt": "Copy: " + text + "\n", "chosen": text, "rejected": loop}
        rows.append(row)
    return write_jsonl(path, rows)


@pytest.fixture
def pairs(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    return make_pairs(tmp_path / "pairs.jsonl")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["train", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def losses(out: Path) -> list[float]:
    return [row["loss"] for row in read_jsonl(out / "metrics.jsonl")]


COMMON = ("--batch-size", "2", "--lr", "1e-3", "--max-length", "384", "--threads", "1")


def test_head_log_prob_gradients_are_exact():
    hidden = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (9,))
    assert torch.autograd.gradcheck(lambda h, w: _HeadLogProb.apply(h, w, labels), (hidden, weight))


def test_completion_logps_equal_the_full_logits_path(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ids = torch.randint(3, 500, (4, 40))
    labels = ids.clone()
    labels[:, :12] = -100
    labels[1, 30:] = -100
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    sums, counts = CompletionLogps(model)(ids, mask, labels)
    sums.sum().backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    full = sequence_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
    full.sum().backward()
    torch.testing.assert_close(sums, full, rtol=0, atol=1e-4)
    assert counts.tolist() == [28, 18, 28, 28]
    padded, _ = CompletionLogps(model, padding_free=False)(ids, mask, labels)  # the GPU path, here on a CPU
    torch.testing.assert_close(padded, sums.detach(), rtol=0, atol=1e-4)
    for a, p in zip(ours, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def _grads_of(fn, model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    sums, _ = fn(**batch)
    sums.sum().backward()
    return sums.detach(), [p.grad.clone() for p in model.parameters()]


def test_pairs_sharing_a_prompt_run_as_one_sequence_with_the_same_log_probs(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    from dpominer.train import logps
    from dpominer.train.data import Example, collate

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 500, (n,), generator=gen).tolist()  # noqa: E731
    batch = collate([Example("a", ids(14), ids(9), ids(30)), Example("b", ids(5), ids(21), ids(3))], pad_id=0)
    full = sequence_logps(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits, batch["labels"])

    shared = CompletionLogps(model)
    calls = []
    monkeypatch.setattr(logps, "_tree_inputs", lambda *a: calls.append(a) or _tree_inputs(*a))
    tree, tree_grads = _grads_of(shared, model, batch)
    assert len(calls) == 3 and shared.share_prompts  # the first pair's check, then one call per pair
    one_per_row = CompletionLogps(model)
    one_per_row.share_prompts = False
    rows, row_grads = _grads_of(one_per_row, model, batch)
    torch.testing.assert_close(tree, rows, rtol=0, atol=1e-4)
    torch.testing.assert_close(tree, full.detach(), rtol=0, atol=1e-4)
    for a, b in zip(tree_grads, row_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # a model that ignored the mask (here: a mask that lets the rejected part see the chosen one) is caught
    # by the first pair's check, and the run goes on a call per row with the right numbers
    def leaky(chosen, rejected, p):
        ids_, positions, allowed = _tree_inputs(chosen, rejected, p)
        return ids_, positions, torch.ones_like(allowed).tril_()

    monkeypatch.setattr(logps, "_tree_inputs", leaky)
    checked = CompletionLogps(model)
    sums, _ = checked(**batch)
    assert not checked.share_prompts
    torch.testing.assert_close(sums.detach(), rows, rtol=0, atol=1e-4)


def test_train_writes_a_loadable_model_metrics_and_a_run_record(tiny_model, pairs, tmp_path):
    out = tmp_path / "out"
    code, output = run(pairs, "-m", tiny_model, "-o", out, "--max-steps", "5", "--save-every", "2", *COMMON)
    assert code == 0, output
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "grad_norm", "lr", "tokens_per_s"):
        assert all(math.isfinite(r[key]) for r in rows), key
    # step 1: the policy is the reference, so the sigmoid loss is exactly log 2 and the rewards 0
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and rows[0]["rewards/margins"] == 0
    assert rows[-1]["rewards/margins"] > 0 and rows[-1]["loss"] < math.log(2)  # it learned the preference
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]

    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters(), strict=True))
    meta = json.loads((out / "dpominer.meta.json").read_text())
    assert meta["config"]["beta"] == 0.1 and meta["config"]["seed"] == 0 and "torch" in meta["versions"]
    assert meta["summary"]["train_pairs"] == 12 and not meta["summary"]["ref_cache_hit"]

    # a second run on the same model and pairs (another β) finds the reference log-probs in the cache
    code, _ = run(pairs, "-m", tiny_model, "-o", tmp_path / "again", "--max-steps", "1", "--beta", "0.5", *COMMON)
    assert code == 0
    assert json.loads((tmp_path / "again" / "dpominer.meta.json").read_text())["summary"]["ref_cache_hit"]


def test_live_reference_gives_the_same_run_as_the_precomputed_one(tiny_model, pairs, tmp_path):
    run(pairs, "-m", tiny_model, "-o", tmp_path / "pre", "--max-steps", "3", *COMMON)
    run(pairs, "-m", tiny_model, "-o", tmp_path / "live", "--max-steps", "3", "--ref", "model", *COMMON)
    assert losses(tmp_path / "live") == pytest.approx(losses(tmp_path / "pre"), abs=1e-5)
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "pre", "--max-steps", "3", *COMMON)
    assert code == 1 and "holds an earlier run" in output  # never appended to, never silently overwritten
    assert len(losses(tmp_path / "pre")) == 3


def test_lora_trains_an_adapter_and_merges(tiny_model, pairs, tmp_path):
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "lora", "--max-steps", "3", "--lora",
                       "--lora-r", "4", *COMMON[:2], "--lr", "1e-2", *COMMON[4:])
    assert code == 0, output
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["r"] == 4
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    code, _ = run(pairs, "-m", tiny_model, "-o", tmp_path / "merged", "--max-steps", "3", "--lora", "--merge",
                  "--lora-r", "4", "--ref", "model", *COMMON[:2], "--lr", "1e-2", *COMMON[4:])
    assert code == 0
    # adapter switched off as the live reference == base-model log-probs precomputed
    assert losses(tmp_path / "merged") == pytest.approx(losses(tmp_path / "lora"), abs=1e-5)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(merged.parameters(), base.parameters(), strict=True))


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(tiny_model, pairs, tmp_path):
    out = tmp_path / "out"
    code, output = run(pairs, "-m", tiny_model, "-o", out, "--max-steps", "6", "--save-every", "1",
                       *COMMON[:2], "--lr", "1e30", *COMMON[4:])
    assert code == 1
    assert "training stopped" in output and "step-0000001" in output
    assert (out / "checkpoints" / "step-0000001").exists() and not (out / "config.json").exists()


def test_bad_pairs_name_the_line_and_write_nothing(tiny_model, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a\n", "chosen": "b", "rejected": "c"},
                                                {"prompt": "a", "chosen": "b"}])
    code, output = run(bad, "-m", tiny_model, "-o", tmp_path / "out", "--max-steps", "1")
    assert code == 1 and f"{bad}:2: rejected: Field required" in output
    assert not (tmp_path / "out").exists()
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}],
                                                    "rejected": "c"}])
    code, output = run(mixed, "-m", tiny_model, "-o", tmp_path / "out", "--max-steps", "1")
    assert code == 1 and "mixed.jsonl:1: prompt, chosen and rejected must all be strings or all be" in output
    code, output = run(bad, "-m", tiny_model, "-o", tmp_path / "out", "--loss-type", "kto")
    assert code == 1 and "--loss-type" in output


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "dpominer", "train", *map(str, args)]


def test_resume_after_kill_9_replays_the_same_trajectory(tiny_model, pairs, tmp_path):
    args = ("-m", tiny_model, "--max-steps", "40", "--save-every", "4", *COMMON)
    env = os.environ | {"DPOMINER_CACHE": str(tmp_path / "cache")}
    whole = tmp_path / "whole"
    subprocess.run(_cli(pairs, "-o", whole, *args), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(pairs, "-o", out, *args), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-0000008").exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "config.json").exists()
    assert len(read_jsonl(out / "metrics.jsonl")) < 40

    # without --resume the leftover run is not silently overwritten
    refused = subprocess.run(_cli(pairs, "-o", out, *args), env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    subprocess.run(_cli(pairs, "-o", out, *args, "--resume"), check=True, env=env, capture_output=True)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, 41))
    assert losses(out) == pytest.approx(losses(whole), abs=1e-6)


def test_torchrun_two_processes_match_one_process_with_accumulation(tiny_model, pairs, tmp_path):
    env = os.environ | {"DPOMINER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = (pairs, "-m", tiny_model, "--max-steps", "4", *COMMON)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dpominer", "train", *map(str, args), "-o", str(tmp_path / "ddp")]
    proc = subprocess.run(ddp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    subprocess.run(_cli(*args, "-o", tmp_path / "one", "--grad-accum", "2"), check=True, env=env, capture_output=True)
    meta = json.loads((tmp_path / "ddp" / "dpominer.meta.json").read_text())
    assert meta["world_size"] == 2
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "one"), abs=1e-4)
    assert losses(tmp_path / "ddp")[-1] < losses(tmp_path / "ddp")[0]


def test_checkpointing_bf16_and_eval_split(tiny_model, pairs, tmp_path):
    base = ("-m", tiny_model, "--max-steps", "3", "--eval-fraction", "0.3", *COMMON)
    assert run(pairs, "-o", tmp_path / "plain", *base)[0] == 0
    assert run(pairs, "-o", tmp_path / "gc", *base, "--gradient-checkpointing")[0] == 0
    assert losses(tmp_path / "gc") == pytest.approx(losses(tmp_path / "plain"), abs=1e-5)  # recomputed, not changed
    last = read_jsonl(tmp_path / "plain" / "metrics.jsonl")[-1]
    assert {"eval/loss", "eval/rewards/margins", "eval/rewards/accuracies"} <= set(last)
    meta = json.loads((tmp_path / "plain" / "dpominer.meta.json").read_text())["summary"]
    assert meta["eval_pairs"] > 0 and meta["train_pairs"] + meta["eval_pairs"] == 12

    assert run(pairs, "-o", tmp_path / "bf16", *base, "--dtype", "bf16")[0] == 0
    rows = read_jsonl(tmp_path / "bf16" / "metrics.jsonl")
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # reference taken under the same autocast
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_length_penalty_and_rejected_loop_cut_reach_the_loss(tiny_model, pairs, tmp_path):
    from transformers import AutoTokenizer

    from dpominer.train.config import TrainConfig
    from dpominer.train.loop import TrainSummary, read_examples

    out = tmp_path / "rdpo"
    code, output = run(pairs, "-m", tiny_model, "-o", out, "--max-steps", "1", "--length-penalty", "-0.01",
                       "--rejected-loop-copies", "2", "--batch-size", "12", "--lr", "1e-3", "--max-length", "384",
                       "--threads", "1", "--save-every", "0")
    assert code == 0, output
    meta = json.loads((out / "dpominer.meta.json").read_text())
    assert meta["summary"]["truncation"]["rejected_loops_cut"] == 12  # 8 copies each, cut to 2
    cfg = TrainConfig(model=str(tiny_model), rejected_loop_copies=2, max_length=384)
    examples, _ = read_examples(pairs, AutoTokenizer.from_pretrained(tiny_model), cfg, False, TrainSummary())
    deltas = [len(e.chosen_ids) - len(e.rejected_ids) for e in examples]
    # step 1: policy = reference, so β·logits = 0 and the loss is the mean of −log σ(α·Δ), α = −0.01
    expected = sum(math.log1p(math.exp(0.01 * d)) for d in deltas) / len(deltas)
    [row] = read_jsonl(out / "metrics.jsonl")
    assert row["loss"] == pytest.approx(expected, abs=1e-5) and row["loss"] != pytest.approx(math.log(2))
    assert row["length/chosen"] == pytest.approx(sum(len(e.chosen_ids) for e in examples) / 12)
    code, output = run(pairs, "-m", tiny_model, "-o", tmp_path / "x", "--length-penalty", "0.1", "--loss-type", "ipo")
    assert code == 1 and "length_penalty applies to the sigmoid and hinge losses" in output
