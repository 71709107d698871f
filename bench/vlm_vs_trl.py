"""VLM DPO: `dpominer train`'s loss against TRL 1.16 DPOTrainer's vision path, and the cost of encoding a
page image once per pair (ours) instead of once per row (twice per pair, TRL's collator).

    python bench/vlm_vs_trl.py [--pairs 4] [--image-size 64] [--repeats 5] [--threads 2]

The model is a tiny random LLaVA-style VLM (CLIP vision tower + Llama text, LlavaProcessor with the PIL
CLIP image processor), built here; the pages are real paragraphs (stdlib docstrings, and French and German
text) rendered with Pillow; the pairs come from `dpominer pair` on loop-vs-clean candidates, given to
both trainers without provenance (both sides then end with the end-of-turn token, as TRL tokenises them).

Loss parity: a policy made by nudging the weights (so it differs from the reference); TRL's loss from its
vision collator (`DataCollatorForVisionPreference`, images column cast to `Image`, the processor as
`processing_class`, max_length=None) and `_compute_loss`, against ours from `tokenize_image_pair`,
`collate`, `CompletionLogps` and `dpo_loss` on the same pairs.

Speed: one DPO step (building the batch — pages read and processed — then policy forward + backward,
reference log-probs given) on the same pairs: ours with each pair as one sequence prompt|chosen|rejected
(the image encoded once), ours with a call per row (the image encoded for chosen and again for rejected),
and TRL's collator + `_compute_loss` + backward (the images encoded twice, in one padded batch). Median
of --repeats, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

FOREIGN = [
    "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison et de "
    "conscience et doivent agir les uns envers les autres dans un esprit de fraternité.",
    "Die Würde des Menschen ist unantastbar. Sie zu achten und zu schützen ist Verpflichtung aller staatlichen "
    "Gewalt.",
]


def make_pairs(root: Path, count: int) -> Path:
    from conftest import candidate_record, write_jsonl
    from vlm_helpers import image_doc, render_page

    from dpominer.mining import PairRunConfig, run_pair

    texts = [json.loads(line)["text"][:240] for line in (ROOT / "bench" / "data" / "passages.jsonl").open()]
    texts = (FOREIGN + texts)[:count]
    rows = []
    for i, text in enumerate(texts):
        render_page(text, root / "pages" / f"p{i}.png")
        loop = text[:40] + " and the value," * (8 + 2 * i)
        record = candidate_record(f"p{i}", [(text, "stop"), (loop, "length")], reference=text, messages=True)
        rows.append(record | {"images": [f"pages/p{i}.png"], "messages": image_doc("", "", "")["messages"]})
    write_jsonl(root / "candidates.jsonl", rows)
    run_pair(root / "candidates.jsonl", root / "all.jsonl", PairRunConfig())
    keep = ("images", "prompt", "chosen", "rejected")  # no provenance: as TRL sees the pairs
    out = root / "pairs.jsonl"
    rows = [json.loads(line) for line in (root / "all.jsonl").open()]
    out.write_text("".join(json.dumps({k: row[k] for k in keep}) + "\n" for row in rows))
    return out


def setup(args):
    import os

    import torch
    from datasets import Image, Sequence, load_dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer
    from vlm_helpers import build_tiny_vlm

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    model_dir = build_tiny_vlm(root / "vlm", image_size=args.image_size)
    pairs = make_pairs(root, args.pairs)
    processor = AutoProcessor.from_pretrained(model_dir)
    ref = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    policy = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 2e-2)
    os.chdir(pairs.parent)  # image paths resolve from the pairs file's folder
    data = load_dataset("json", data_files=str(pairs), split="train").cast_column("images", Sequence(Image()))
    config = DPOConfig(output_dir=tempfile.mkdtemp(), max_length=None, beta=0.1, report_to=[], use_cpu=True,
                       bf16=False, per_device_train_batch_size=args.pairs)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=data, processing_class=processor)
    return trainer, ref, processor, pairs


def ours(trainer, ref, processor, pairs: Path):
    """The pairs tokenised once (as `dpominer train` does before training) and a function building a batch
    (as each step does: the page pixels are read and processed again)."""
    from dpominer.train.data import PreferenceRecord, collate
    from dpominer.train.vision import tokenize_image_pair

    records = [PreferenceRecord.model_validate(json.loads(line)) for line in pairs.open()]
    examples = [tokenize_image_pair(r, processor, base=pairs.parent, dpi=150, loop_copies=4) for r in records]
    return lambda: collate(examples, processor.tokenizer.pad_token_id)


def parity(trainer, ref, processor, pairs: Path, n: int) -> tuple[float, float]:
    import torch

    from dpominer.train.logps import CompletionLogps
    from dpominer.train.loss import dpo_loss

    with torch.no_grad():
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
        trl_loss = float(trainer._compute_loss(trainer.model, batch, return_outputs=False))
        mine = ours(trainer, ref, processor, pairs)()
        policy_sums, _ = CompletionLogps(trainer.model)(**mine)
        ref_sums, _ = CompletionLogps(ref)(**mine)
        losses, _, _ = dpo_loss(policy_sums[:n], policy_sums[n:], ref_sums[:n], ref_sums[n:], beta=0.1)
    return trl_loss, float(losses.mean())


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(trainer, ref, processor, pairs: Path, n: int, repeats: int) -> dict[str, float]:
    import torch

    from dpominer.train.logps import CompletionLogps
    from dpominer.train.loss import dpo_loss

    model = trainer.model.train()
    batch = ours(trainer, ref, processor, pairs)
    with torch.no_grad():
        ref_sums, _ = CompletionLogps(ref)(**batch())
    encodings = []

    def count(module, args, kwargs, output):
        pixels = args[0] if args else kwargs["pixel_values"]
        encodings.append(pixels.shape[0])  # images encoded by this call

    model.model.vision_tower.register_forward_hook(count, with_kwargs=True)

    def step(share: bool):
        def run():
            fn = CompletionLogps(model)
            fn.share_prompts = share
            sums, _ = fn(**batch())  # the batch built as in training: pixels read and processed
            losses, _, _ = dpo_loss(sums[:n], sums[n:], ref_sums[:n], ref_sums[n:], beta=0.1)
            losses.mean().backward()
            model.zero_grad(set_to_none=True)
        return run

    def trl_step():
        rows = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
        trainer._compute_loss(model, rows, return_outputs=False).backward()
        model.zero_grad(set_to_none=True)

    out = {}
    for name, fn in (("once", step(True)), ("twice", step(False)), ("trl", trl_step)):
        encodings.clear()
        out[name] = timed(fn, repeats)
        out[name + "_encodings"] = sum(encodings) / (repeats + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64, help="pixels per side of the tiny CLIP tower's input")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    trainer, ref, processor, pairs = setup(args)
    n = len(trainer.train_dataset)
    tokens = (args.image_size // 8) ** 2
    trl_loss, our_loss = parity(trainer, ref, processor, pairs, n)
    print(f"tiny LLaVA-style VLM, {n} pairs from rendered pages, {tokens} image tokens per page, "
          f"{args.threads} threads")
    print(f"loss parity (nudged policy vs reference, one batch): TRL {trl_loss:.6f} ours {our_loss:.6f} "
          f"|Δ| {abs(trl_loss - our_loss):.2e}")
    s = speed(trainer, ref, processor, pairs, n, args.repeats)
    print(f"{'one DPO step (fwd+bwd)':<44}{'median s':>10}{'images encoded':>16}{'× once':>8}")
    for key, label in (("once", "dpominer, image encoded once per pair"),
                       ("twice", "dpominer, a call per row (twice per pair)"),
                       ("trl", "TRL DPOTrainer._compute_loss (twice)")):
        print(f"{label:<44}{s[key]:>10.3f}{s[key + '_encodings']:>16.0f}{s[key] / s['once']:>8.2f}")
    print("(× once = that way's time ÷ encoding once: >1 means encoding once is faster)")


if __name__ == "__main__":
    main()
