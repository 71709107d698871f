"""Every command-line option, declared once: a row ``opt(config key, flags)`` per option in each command's
table (its type, and its help unless given, come from the config field it sets), plus the few options
that set no config field (input/output paths, --resume, --workers …).
"""

from __future__ import annotations

import typer

from .config import opt

CONFIG = typer.Option(None, "--config", help="TOML or JSON file with the settings; flags override it.",
                      dir_okay=False)
SKIP_INVALID = typer.Option(False, "--skip-invalid", help="Skip bad input lines (and count them) instead of stopping.")
WORKERS = typer.Option(0, "--workers", min=0, help="Processes that score (0: all cores; inputs under 8 MB "
                       "run in this one). The output is the same for any number.")
OUTPUT = typer.Option(..., "-o", "--output", help="Output JSONL (written atomically).", dir_okay=False)
MIN_COVERAGE = "Share of the reference's words a candidate that stopped on its own must reproduce (0.8)."
CHECK = ("A failure check run on every candidate (repeat): json | json-schema:FILE | regex-forbid:PATTERN | "
         "regex-require:PATTERN | max-length-ratio:R | py:MODULE:FUNCTION | an entry point NAME[:ARG] (group "
         "dpominer.checks). Replaces the config's [[checks]].")

SCORE_OPTIONS = (
    opt("rescore", help="Recompute scores already present."),
    opt("omission.min_coverage", "--min-coverage", min=0, max=1, help=MIN_COVERAGE),
    opt("checks", "--check", help=CHECK),
    opt("judge.model", "--judge", help="Judge model: every non-degenerate candidate gets a rubric score (for "
                                       "documents without a reference)."),
    opt("judge.backend", "--judge-backend", help="auto | vllm | hf | openai"),
    opt("judge.base_url", "--judge-base-url", help="OpenAI-compatible judge server."),
    opt("judge.server_retries", "--retries", min=0, help="Judge backend openai: retries of a failed request "
        "(backoff; default 5), then the run stops, resumable."),
)

PAIR_OPTIONS = (
    opt("policy.chosen_from", help="candidates | reference | auto"),
    opt("policy.max_chosen_cer", min=0, help="Highest CER a chosen candidate may have."),
    opt("policy.min_margin", min=0, help="Least CER gap between chosen and rejected."),
    opt("policy.max_pairs_per_doc", min=1, help="Most pairs one document yields."),
    opt("policy.dedup_threshold", min=0, max=100, help="rapidfuzz ratio (0-100) at which candidates collapse."),
    opt("policy.reject_worse", "--reject-worse/--no-reject-worse",
        help="Also reject clean candidates of clearly worse fidelity."),
    opt("policy.reject_omission", "--reject-omission/--no-reject-omission",
        help="Reject candidates that stopped early (on by default)."),
    opt("score.omission.min_coverage", "--min-coverage", min=0, max=1, help=MIN_COVERAGE),
    opt("score.checks", "--check", help=CHECK),
    opt("policy.score_by", help="auto | fidelity | judge: how candidates rank."),
    opt("policy.min_judge_margin", min=0, max=1,
        help="Least judge-score gap (0-1) to reject a worse-judged candidate."),
)

EVAL_OPTIONS = (opt("checks", "--check", help=CHECK),)  # of the scoring eval runs (a ScoreConfig)

SAMPLE_OPTIONS = (
    opt("model", "--model", "-m", help="Hub id, local dir, or smollm2-135m-instruct."),
    opt("backend", help="auto | vllm | hf | openai"),
    opt("sampling.n", "-n", min=1, help="Candidates per document (default 8)."),
    opt("sampling.temperature", "--temperature", "-t", min=0, help="Default 0.7; 0 is greedy."),
    opt("sampling.top_p", min=0, max=1),
    opt("sampling.top_k", min=-1),
    opt("sampling.max_tokens", min=1, help="Default 512."),
    opt("sampling.seed", min=0, help="Base seed; each candidate's derives from it."),
    opt("chat_template", "--chat-template/--no-chat-template", help="Default: only documents with messages."),
    opt("sampling.stop_on_loop",
        help="Stop a candidate once a token loop is established (finish: repetition)."),
    opt("sampling.logprobs", help="Store each token's log-prob (token_logprobs, 2 decimals) beside token_ids."),
    opt("shard", help="I/N: sample shard I of N (by a hash of the id)."),
    opt("chunk_size", min=1, help="Documents per engine call (default 64)."),
    opt("dtype", help="auto | float32 | bfloat16 | float16"),
    opt("max_model_len", min=16),
    opt("tensor_parallel_size", min=1),
    opt("gpu_memory_utilization", min=0, max=1),
    opt("threads", min=1, help="torch threads for the hf backend."),
    opt("trust_remote_code"),
    opt("base_url", help="OpenAI-compatible server (backend openai)."),
    opt("concurrency", min=1, help="Requests in flight (backend openai)."),
    opt("retries", min=0, help="Backend openai: retries of a failed request (backoff; default 5), then the run "
        "stops, resumable."),
    opt("dpi", min=1, help="Resolution PDF pages are rendered at (150)."),
)

# what `train` writes into its output folder: a file of these names there would be replaced
TRAIN_WRITES = ("metrics.jsonl", "dpominer.meta.json", "checkpoints", "*.json", "*.safetensors", "*.bin", "*.txt",
                "*.model", "*.jinja", "*.md")

TRAIN_OPTIONS = (
    opt("model", "--model", "-m", help="Hub id, local dir, or smollm2-135m-instruct."),
    opt("beta", min=0, help="DPO beta (default 0.1)."),
    opt("loss_type", help="sigmoid | ipo | hinge"),
    opt("label_smoothing", min=0, max=0.5, help="cDPO epsilon (sigmoid loss)."),
    opt("sft_weight", min=0, help="Add this times the chosen side's NLL."),
    opt("length_normalize", help="Mean, not sum, of log-probs."),
    opt("length_penalty", min=-1, max=1, help="R-DPO alpha: + alpha*(|chosen|-|rejected|) tokens inside the "
        "sigmoid; negative discounts pairs whose chosen side is the shorter (0)."),
    opt("lr", min=0, help="Peak learning rate (default 1e-6 full, 5e-5 LoRA)."),
    opt("batch_size", min=1, help="Pairs per micro-batch per process (4)."),
    opt("grad_accum", min=1, help="Micro-batches per optimizer step (1)."),
    opt("epochs", min=0),
    opt("max_steps", min=1, help="Optimizer steps; overrides --epochs."),
    opt("warmup_ratio", min=0, max=1),
    opt("max_length", min=2, help="Tokens of prompt + completion (1024)."),
    opt("max_prompt_length", min=1),
    opt("loop_copies", min=1, help="Loop copies a cut rejected side keeps (4)."),
    opt("rejected_loop_copies", min=0, help="Cut every rejected loop of more than K copies to its onset + K copies "
        "(3; 0 keeps it whole)."),
    opt("tokenize_separately", help="Tokenise prompt and completion apart (when they merge at the boundary)."),
    opt("eval_fraction", min=0, max=1, help="Share of documents held out."),
    opt("eval_every", min=0),
    opt("dtype", help="auto | fp32 | bf16 (autocast)"),
    opt("gradient_checkpointing"),
    opt("fsdp", help="Shard weights, grads and optimizer over the GPUs (FSDP2; under torchrun) instead of "
        "replicating them (DDP)."),
    opt("cpu_offload", help="With --fsdp: shards and optimizer on CPU."),
    opt("ref", help="precompute (cached) | model"),
    opt("lora.enabled", "--lora", help="Train a LoRA adapter (needs peft)."),
    opt("lora.r", "--lora-r", min=1),
    opt("lora.merge", "--merge", help="With --lora: write the merged full model."),
    opt("freeze_vision", "--freeze-vision/--no-freeze-vision", help="VLMs: keep the vision tower and projector "
        "frozen (default; LoRA then targets the language model only)."),
    opt("dpi", min=1, help="Resolution PDF pages are rendered at (150)."),
    opt("save_every", min=0, help="Steps between checkpoints (50; 0 none)."),
    opt("seed", min=0),
    opt("threads", min=1, help="torch CPU threads."),
)
