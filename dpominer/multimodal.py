"""Vision-language models through their processor: what sampling and training share.

A VLM is recognised by its config (a ``vision_config``, or a model class the image-text Auto class
knows). Its processor renders the chat template with the image placeholders, expands each placeholder
into the model's image tokens and turns pixels into the model's extra inputs (``pixel_values``,
``image_sizes``, ``image_grid_thw``, …: whatever the processor returns, the model's forward takes).
"""

from __future__ import annotations

from typing import Any

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model", "multi_modal_projector", "mm_projector",
                       "vision_embed_tokens", "connector", "image_newline", "vision_resampler")


def is_vision_model(model_dir: str, trust_remote_code: bool = False) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return getattr(config, "vision_config", None) is not None


def load_processor(model_dir: str, trust_remote_code: bool = False):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if not hasattr(processor, "image_processor"):
        raise ValueError(f"{model_dir}: its processor takes no images")
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
    return processor


def model_class(model_dir: str, trust_remote_code: bool = False):
    """``AutoModelForImageTextToText`` where it knows the config, else the class the config names."""
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if type(config) in AutoModelForImageTextToText._model_mapping or trust_remote_code:
        return AutoModelForImageTextToText
    for name in config.architectures or []:
        cls = getattr(transformers, name, None)  # the config's own declaration, not a user string
        if cls is not None:
            return cls
    raise ValueError(f"{model_dir}: no image-text model class for {type(config).__name__}")


def load_model(model_dir: str, dtype, trust_remote_code: bool = False):
    cls = model_class(model_dir, trust_remote_code)
    return cls.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)


def template_text(processor, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode(processor, text: str, images: list) -> dict[str, Any]:
    """The processor's output for one sequence: ``input_ids`` (a list, image tokens expanded) and the
    extra inputs as tensors with their leading batch/image dimension."""
    enc = processor(text=[text], images=[images] if images else None, return_tensors="pt", add_special_tokens=False)
    out: dict[str, Any] = {k: v for k, v in enc.items() if k not in TEXT_KEYS}
    out["input_ids"] = enc["input_ids"][0].tolist()
    return out


def is_vision_module(name: str) -> bool:
    return any(part in VISION_MODULE_NAMES for part in name.split("."))


def language_linear_names(model) -> list[str]:
    """Full names of the language model's linear layers (the output head excluded): LoRA targets these
    when the vision tower and projector stay frozen."""
    from torch import nn

    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not head and not is_vision_module(name)]


def freeze_vision(model) -> int:
    """Freeze the vision tower and projector; returns how many parameters were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_module(name):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen
