from __future__ import annotations

import json
from pathlib import Path

import pytest

PASSAGE = (
    "By default, all communication is in bytes, and therefore any input should be bytes, and the return "
    "value will be bytes. If in text mode, any input should be a string, and the return value will be a "
    "string decoded according to locale encoding."
)
LOOP = PASSAGE[:60] + " or if any input should be a string decoded according to locale encoding," * 12 + " or if"


def write_jsonl(path: Path, rows: list) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def candidate_record(doc_id: str, texts: list[tuple[str, str]], reference: str | None = PASSAGE,
                     messages: bool = False) -> dict:
    record = {"id": doc_id, "model": "test", "sampling": {"temperature": 0.7},
              "candidates": [{"index": i, "text": t, "finish_reason": f} for i, (t, f) in enumerate(texts)]}
    if messages:
        record["messages"] = [{"role": "user", "content": "Transcribe: " + (reference or "")}]
    else:
        record["prompt"] = "Transcribe: " + (reference or "")
    if reference is not None:
        record["reference"] = reference
    return record


@pytest.fixture
def candidates_file(tmp_path: Path) -> Path:
    near = PASSAGE.replace("bytes", "bites", 1)
    rows = [
        candidate_record("clean-and-loop", [(PASSAGE, "stop"), (LOOP, "length"), (near, "stop")]),
        candidate_record("all-loops", [(LOOP, "length"), (LOOP + " or", "length")]),
        candidate_record("all-clean", [(PASSAGE, "stop"), (near, "stop")]),
    ]
    return write_jsonl(tmp_path / "candidates.jsonl", rows)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(path: Path, seed: int = 0, max_positions: int = 256) -> Path:
    """A real (random-weight) 2-layer Llama with a 512-token BPE tokenizer trained on bench passages.

    Small enough to build in ~1 s and generate at hundreds of tokens/s on a CPU; saved and loaded by
    path like any model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    passages = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"
    texts = [json.loads(line)["text"] for line in passages.open()]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def documents(n: int, messages_every: int = 2) -> list[dict]:
    passages = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"
    texts = [json.loads(line)["text"] for line in passages.open()][:n]
    rows = []
    for i, text in enumerate(texts):
        if i % messages_every == 0:
            rows.append({"id": f"d{i}", "messages": [{"role": "user", "content": "Copy: " + text[:120]}],
                         "reference": text[:120]})
        else:
            rows.append({"id": f"d{i}", "prompt": text[:80], "reference": text[80:200]})
    return rows
