#!/usr/bin/env bash
# Sample one shard per SLURM array task (or per GPU box), then merge.
#   sbatch --array=0-7 examples/shard_slurm.sh docs.jsonl runs/cands MODEL
# Each task samples documents whose id hashes to its shard; a task that dies is rerun with --resume
# and keeps what it had. When all are done (run on one node):
#   dpominer merge runs/cands.shard*.jsonl -o runs/candidates.jsonl --docs docs.jsonl --strict
set -euo pipefail
DOCS=${1:?docs.jsonl}; PREFIX=${2:?output prefix}; MODEL=${3:-smollm2-135m-instruct}
I=${SLURM_ARRAY_TASK_ID:?run as a SLURM array task, or set SLURM_ARRAY_TASK_ID}
N=${SLURM_ARRAY_TASK_COUNT:-8}
dpominer sample "$DOCS" -o "$PREFIX.shard$I.jsonl" --model "$MODEL" --backend vllm \
  --shard "$I/$N" -n 8 --temperature 0.7 --max-tokens 1024 --stop-on-loop --resume
