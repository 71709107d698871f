"""A tiny random LLaVA-style VLM (CLIP vision tower + 2-layer Llama, LlavaProcessor), for running the OCR
pipeline's plumbing on a CPU in seconds. Its transcriptions are noise: it proves the stages join, not that
DPO helps; examples/gpu_box.sh has the command for a real VLM.

    python examples/ocr/tiny_vlm.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from vlm_helpers import build_tiny_vlm  # noqa: E402 — the same model the tests build

if __name__ == "__main__":
    print(build_tiny_vlm(Path(sys.argv[1])))
