"""The `dpominer` command line. Each command parses flags, builds a config, calls one function."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from . import __version__
from .records import InputError, write_json

app = typer.Typer(
    name="dpominer",
    help="Mine a model's own repetition loops into DPO pairs, and train them away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG = typer.Option(None, "--config", help="TOML or JSON file with the settings; flags override it.",
                      dir_okay=False)
SKIP_INVALID = typer.Option(False, "--skip-invalid", help="Skip bad input lines (and count them) instead of stopping.")
OUTPUT = typer.Option(..., "-o", "--output", help="Output JSONL (written atomically).", dir_okay=False)
CHECK = typer.Option([], "--check", help="A failure check run on every candidate (repeat): json | json-schema:FILE | "
                     "regex-forbid:PATTERN | regex-require:PATTERN | max-length-ratio:R | py:MODULE:FUNCTION | "
                     "an entry point NAME[:ARG] (group dpominer.checks). Replaces the config's [[checks]].")


def _checks(values: list[str], config: Path | None, from_file: tuple, key: str = "checks") -> tuple:
    """The checks to run: the --check flags, else the config file's; every one built now (schemas
    read, modules imported), so bad input stops before any work, naming the flag or the file."""
    from .checks import parse_specs, validate

    specs = tuple(parse_specs(values)) if values else from_file
    validate(list(specs), "--check" if values else f"{config}: {key}")
    return specs


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input → one line on stderr, exit code 1, no output written."""
    from .ui import error

    try:
        yield
    except InputError as exc:
        error(str(exc))
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dpominer {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show the version and exit.")) -> None:
    """docs.jsonl → sample → score → pair → train → eval. Run `dpominer COMMAND --help` for each step."""


@app.command()
def score(
    input: Path = typer.Argument(..., help="Candidate records (JSONL) from `dpominer sample`.", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    rescore: bool | None = typer.Option(None, "--rescore", help="Recompute scores already present."),
    judge: str | None = typer.Option(None, "--judge", help="Judge model: every non-degenerate candidate gets a "
                                     "rubric score (for documents without a reference)."),
    judge_backend: str | None = typer.Option(None, "--judge-backend", help="auto | vllm | hf | openai"),
    rubric: Path | None = typer.Option(None, "--rubric", help="Rubric file (TOML/JSON/YAML): task, criteria "
                                       "with weights, scale.", dir_okay=False),
    judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="OpenAI-compatible judge server."),
    resume: bool = typer.Option(False, "--resume", help="With --judge: continue OUT.partial of a killed run."),
    check: list[str] = CHECK,
    skip_invalid: bool = SKIP_INVALID,
) -> None:
    """Judge every candidate for repetition loops, failed checks and, given a reference, fidelity (CER, …)."""
    from .mining import ScoreConfig, run_score
    from .ui import reading

    with user_errors():
        from .config import build_config

        cfg = build_config(ScoreConfig, config, {"rescore": ("--rescore", rescore)})
        cfg = cfg.model_copy(update={"checks": _checks(check, config, cfg.checks)})
        if judge is None:
            if resume:
                raise InputError("--resume: only with --judge (plain scoring is quick to redo)")
            with reading(input, "scoring") as digest:
                summary = run_score(input, output, cfg, skip_invalid=skip_invalid, progress=digest)
            _finish("score", output, cfg, digest, summary)
            return
        from .judge import load_rubric
        from .judging import JudgeConfig, make_judge_backend, run_judged_score
        from .ui import judging_progress

        flags = {"model": ("--judge", judge), "backend": ("--judge-backend", judge_backend),
                 "base_url": ("--judge-base-url", judge_base_url)}
        judge_cfg = build_config(JudgeConfig, None, flags)
        if rubric is not None:
            judge_cfg = judge_cfg.model_copy(update={"rubric": load_rubric(rubric)})
        from .records import CandidateRecord, iter_jsonl

        # the whole input is checked (and its digest taken) before the judge model loads
        with reading(input, "checking") as digest:
            total = sum(1 for _ in iter_jsonl(input, CandidateRecord, skip_invalid=skip_invalid, on_line=digest))
        engine = make_judge_backend(judge_cfg)
        with judging_progress(total) as on_chunk:
            summary = run_judged_score(input, output, cfg, judge_cfg, engine, resume=resume,
                                       skip_invalid=skip_invalid, on_chunk=on_chunk)
        _finish("score", output, {"score": cfg.model_dump(mode="json"), "judge": judge_cfg.model_dump(mode="json")},
                digest, summary, {"judge_engine": engine.describe()})


@app.command()
def pair(
    input: Path = typer.Argument(..., help="Candidate records, scored or not (scored on the way).", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    chosen_from: str | None = typer.Option(None, "--chosen-from", help="candidates | reference | auto"),
    max_chosen_cer: float | None = typer.Option(
        None, "--max-chosen-cer", help="Highest CER a chosen candidate may have."),
    min_margin: float | None = typer.Option(None, "--min-margin", help="Least CER gap between chosen and rejected."),
    max_pairs_per_doc: int | None = typer.Option(None, "--max-pairs-per-doc", help="Most pairs one document yields."),
    dedup_threshold: float | None = typer.Option(
        None, "--dedup-threshold", help="rapidfuzz ratio (0-100) at which candidates collapse."),
    reject_worse: bool | None = typer.Option(
        None, "--reject-worse/--no-reject-worse", help="Also reject clean candidates of clearly worse fidelity."),
    score_by: str | None = typer.Option(None, "--score-by", help="auto | fidelity | judge: how candidates rank."),
    min_judge_margin: float | None = typer.Option(
        None, "--min-judge-margin", help="Least judge-score gap (0-1) to reject a worse-judged candidate."),
    stats_json: Path | None = typer.Option(
        None, "--stats-json", help="Write the summary numbers here too.", dir_okay=False),
    check: list[str] = CHECK,
    skip_invalid: bool = SKIP_INVALID,
) -> None:
    """Turn scored candidates into TRL-compatible preference pairs (degenerate ones rejected)."""
    from .mining import PairRunConfig, run_pair
    from .ui import reading

    with user_errors():
        from .config import build_config

        cfg = build_config(PairRunConfig, config, {
            "policy.chosen_from": ("--chosen-from", chosen_from),
            "policy.max_chosen_cer": ("--max-chosen-cer", max_chosen_cer),
            "policy.min_margin": ("--min-margin", min_margin),
            "policy.max_pairs_per_doc": ("--max-pairs-per-doc", max_pairs_per_doc),
            "policy.dedup_threshold": ("--dedup-threshold", dedup_threshold),
            "policy.reject_worse": ("--reject-worse", reject_worse),
            "policy.score_by": ("--score-by", score_by),
            "policy.min_judge_margin": ("--min-judge-margin", min_judge_margin),
        })
        checks = _checks(check, config, cfg.score.checks, "score.checks")
        cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={"checks": checks})})
        with reading(input, "pairing") as digest:
            summary = run_pair(input, output, cfg, skip_invalid=skip_invalid, progress=digest)
        _finish("pair", output, cfg, digest, summary)
        if stats_json is not None:
            write_json(stats_json, summary.as_dict())


@app.command()
def sample(
    docs: Path = typer.Argument(..., help="Documents (JSONL): {id, prompt | messages, reference?}.", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    model: str | None = typer.Option(None, "--model", "-m", help="Hub id, local dir, or smollm2-135m-instruct."),
    backend: str | None = typer.Option(None, "--backend", help="auto | vllm | hf | openai"),
    n: int | None = typer.Option(None, "-n", help="Candidates per document (default 8)."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", help="Default 0.7; 0 is greedy."),
    top_p: float | None = typer.Option(None, "--top-p"),
    top_k: int | None = typer.Option(None, "--top-k"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Default 512."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed; each candidate's derives from it."),
    chat_template: bool | None = typer.Option(
        None, "--chat-template/--no-chat-template", help="Default: only documents with messages."),
    stop_on_loop: bool | None = typer.Option(
        None, "--stop-on-loop", help="Stop a candidate once a token loop is established (finish: repetition)."),
    shard: str | None = typer.Option(None, "--shard", help="I/N: sample shard I of N (by a hash of the id)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the records of OUT.partial and do the rest."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Documents per engine call (default 64)."),
    dtype: str | None = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16"),
    max_model_len: int | None = typer.Option(None, "--max-model-len"),
    tensor_parallel_size: int | None = typer.Option(None, "--tensor-parallel-size"),
    gpu_memory_utilization: float | None = typer.Option(None, "--gpu-memory-utilization"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads for the hf backend."),
    trust_remote_code: bool | None = typer.Option(None, "--trust-remote-code"),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server (backend openai)."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Requests in flight (backend openai)."),
    skip_invalid: bool = SKIP_INVALID,
) -> None:
    """Sample n candidates per document with vLLM, transformers, or an OpenAI-compatible server."""
    import time

    from .runinfo import InputDigest, write_meta
    from .sample import SampleConfig, make_backend, pending, run_sample
    from .ui import sampling_progress, show_sample_summary

    with user_errors():
        from .config import build_config

        flags = {"model": ("--model", model), "backend": ("--backend", backend), "shard": ("--shard", shard),
                 "sampling.n": ("-n", n), "sampling.temperature": ("--temperature", temperature),
                 "sampling.top_p": ("--top-p", top_p), "sampling.top_k": ("--top-k", top_k),
                 "sampling.max_tokens": ("--max-tokens", max_tokens), "sampling.seed": ("--seed", seed),
                 "sampling.stop_on_loop": ("--stop-on-loop", stop_on_loop),
                 "chat_template": ("--chat-template", chat_template), "chunk_size": ("--chunk-size", chunk_size),
                 "dtype": ("--dtype", dtype), "max_model_len": ("--max-model-len", max_model_len),
                 "tensor_parallel_size": ("--tensor-parallel-size", tensor_parallel_size),
                 "gpu_memory_utilization": ("--gpu-memory-utilization", gpu_memory_utilization),
                 "threads": ("--threads", threads), "trust_remote_code": ("--trust-remote-code", trust_remote_code),
                 "base_url": ("--base-url", base_url), "concurrency": ("--concurrency", concurrency)}
        cfg = build_config(SampleConfig, config, flags)
        done, left = pending(docs, output, cfg, resume=resume, skip_invalid=skip_invalid)
        engine = make_backend(cfg)
        start = time.perf_counter()
        with sampling_progress(left) as on_chunk:
            summary = run_sample(docs, output, cfg, engine, done=done, skip_invalid=skip_invalid, on_chunk=on_chunk)
        summary.seconds = round(time.perf_counter() - start, 2)
        numbers = summary.as_dict()
        meta = write_meta(output, "sample", cfg, [InputDigest(docs)], numbers, {"engine": engine.describe()})
        show_sample_summary(numbers, output, meta)


@app.command()
def merge(
    inputs: list[Path] = typer.Argument(..., help="Candidate files of the shards.", dir_okay=False),
    output: Path = OUTPUT,
    docs: Path | None = typer.Option(None, "--docs", help="The documents, to report any no shard produced."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when ids are missing or duplicated."),
) -> None:
    """Join `sample --shard I/N` outputs into one file; report missing and duplicate ids."""
    from .runinfo import write_meta
    from .shards import merge as merge_files
    from .ui import console, counts_table

    with user_errors():
        summary = merge_files(inputs, output, docs)
        numbers = summary.as_dict()
        write_meta(output, "merge", {"inputs": [str(p) for p in inputs], "docs": str(docs) if docs else None}, [],
                   numbers)
        rows = [("records", str(summary.records)), ("duplicate ids dropped", str(summary.duplicates))]
        if docs is not None:
            rows.append(("documents missing", str(summary.missing)))
        console.print(counts_table(str(output), rows))
        for label, ids in (("duplicate", summary.duplicate_ids), ("missing", summary.missing_ids)):
            if ids:
                console.print(f"[yellow]{label}:[/] {', '.join(ids)}", highlight=False)
        if strict and (summary.duplicates or summary.missing):
            raise typer.Exit(1)


@app.command()
def train(
    pairs: Path = typer.Argument(..., help="Preference pairs (JSONL) from `dpominer pair`, or any TRL-format pairs.",
                                 dir_okay=False),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the model, metrics.jsonl and checkpoints.",
                                file_okay=False),
    config: Path | None = CONFIG,
    model: str | None = typer.Option(None, "--model", "-m", help="Hub id, local dir, or smollm2-135m-instruct."),
    beta: float | None = typer.Option(None, "--beta", help="DPO beta (default 0.1)."),
    loss_type: str | None = typer.Option(None, "--loss-type", help="sigmoid | ipo | hinge"),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing", help="cDPO epsilon (sigmoid loss)."),
    sft_weight: float | None = typer.Option(None, "--sft-weight", help="Add this times the chosen side's NLL."),
    length_normalize: bool | None = typer.Option(None, "--length-normalize", help="Mean, not sum, of log-probs."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-6 full, 5e-5 LoRA)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per micro-batch per process (4)."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step (1)."),
    epochs: float | None = typer.Option(None, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs."),
    warmup_ratio: float | None = typer.Option(None, "--warmup-ratio"),
    max_length: int | None = typer.Option(None, "--max-length", help="Tokens of prompt + completion (1024)."),
    max_prompt_length: int | None = typer.Option(None, "--max-prompt-length"),
    loop_copies: int | None = typer.Option(None, "--loop-copies", help="Loop copies a cut rejected side keeps (4)."),
    tokenize_separately: bool | None = typer.Option(
        None, "--tokenize-separately", help="Tokenise prompt and completion apart (when they merge at the boundary)."),
    eval_fraction: float | None = typer.Option(None, "--eval-fraction", help="Share of documents held out."),
    eval_every: int | None = typer.Option(None, "--eval-every"),
    dtype: str | None = typer.Option(None, "--dtype", help="auto | fp32 | bf16 (autocast)"),
    gradient_checkpointing: bool | None = typer.Option(None, "--gradient-checkpointing"),
    ref: str | None = typer.Option(None, "--ref", help="precompute (cached) | model"),
    lora: bool | None = typer.Option(None, "--lora", help="Train a LoRA adapter (needs peft)."),
    lora_r: int | None = typer.Option(None, "--lora-r"),
    merge: bool | None = typer.Option(None, "--merge", help="With --lora: write the merged full model."),
    save_every: int | None = typer.Option(None, "--save-every", help="Steps between checkpoints (50; 0 none)."),
    seed: int | None = typer.Option(None, "--seed"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    resume: bool = typer.Option(False, "--resume", help="Go on from the newest checkpoint in OUTPUT."),
    skip_invalid: bool = SKIP_INVALID,
) -> None:
    """Train the model on the pairs with DPO (our own loop; precomputed reference; LoRA; torchrun)."""
    from .runinfo import InputDigest, write_meta
    from .train.config import TrainConfig
    from .train.loop import TrainingStopped
    from .train.loop import train as run_train
    from .ui import show_train_summary, training_progress

    flags = {k: (f"--{k.split('.')[-1].replace('_', '-')}", v) for k, v in {
        "model": model, "beta": beta, "loss_type": loss_type, "label_smoothing": label_smoothing,
        "sft_weight": sft_weight, "length_normalize": length_normalize, "lr": lr, "batch_size": batch_size,
        "grad_accum": grad_accum, "epochs": epochs, "max_steps": max_steps, "warmup_ratio": warmup_ratio,
        "max_length": max_length, "max_prompt_length": max_prompt_length, "loop_copies": loop_copies,
        "tokenize_separately": tokenize_separately, "eval_fraction": eval_fraction, "eval_every": eval_every,
        "dtype": dtype, "gradient_checkpointing": gradient_checkpointing, "ref": ref, "lora.enabled": lora,
        "lora.r": lora_r, "lora.merge": merge, "save_every": save_every, "seed": seed, "threads": threads}.items()}
    flags |= {"lora.enabled": ("--lora", lora), "lora.r": ("--lora-r", lora_r)}
    with user_errors():
        from .config import build_config

        cfg = build_config(TrainConfig, config, flags)
        main_process = os.environ.get("RANK", "0") == "0"
        try:
            with training_progress(show=main_process) as on_event:
                summary = run_train(pairs, output, cfg, resume=resume, skip_invalid=skip_invalid, on_event=on_event)
        except TrainingStopped as exc:
            raise InputError(str(exc)) from None
        if main_process:
            numbers = summary.as_dict()
            meta = write_meta(output, "train", cfg, [InputDigest.of_file(pairs)], numbers,
                              {"world_size": int(os.environ.get("WORLD_SIZE", "1"))},
                              path=output / "dpominer.meta.json")
            show_train_summary(numbers, output, meta)


@app.command("eval")
def eval_(
    docs: Path | None = typer.Argument(None, help="Held-out documents (JSONL) to sample each --model on.",
                                       dir_okay=False),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for eval.json and the per-model files.",
                                file_okay=False),
    model: list[str] = typer.Option([], "--model", "-m", help="A model to sample (repeat; the first is the baseline)."),
    candidates: list[Path] = typer.Option([], "--candidates", help="Existing candidate files to evaluate (repeat).",
                                          dir_okay=False),
    n: int = typer.Option(1, "-n", help="Candidates per document."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    seed: int = typer.Option(0, "--seed"),
    backend: str = typer.Option("auto", "--backend", help="auto | vllm | hf | openai"),
    sample_config: Path | None = typer.Option(None, "--sample-config", help="More `sample` settings (TOML/JSON).",
                                              dir_okay=False),
    check: list[str] = CHECK,
) -> None:
    """Degeneration rate (95 % CI) and fidelity of models before/after training, on the same documents."""
    from .evaluate import run_eval
    from .mining import ScoreConfig
    from .records import write_json
    from .runinfo import write_meta
    from .ui import show_eval

    with user_errors():
        if not model and not candidates:
            raise InputError("--model or --candidates: nothing to evaluate")
        if model and docs is None:
            raise InputError("DOCS: sampling a --model needs the documents")
        flags = ["-n", str(n), "--temperature", str(temperature), "--max-tokens", str(max_tokens),
                 "--seed", str(seed), "--backend", backend]
        flags += ["--config", str(sample_config)] if sample_config else []
        score_cfg = ScoreConfig(checks=_checks(check, None, ()))
        result = run_eval(docs, model, candidates, output, flags, score_cfg)
        checks_run = [spec.model_dump(exclude_none=True) for spec in score_cfg.checks]
        write_json(output / "eval.json", result | {"sampling": {"n": n, "temperature": temperature,
                                                                "max_tokens": max_tokens, "seed": seed},
                                                   "checks": checks_run})
        meta = write_meta(output / "eval.json", "eval", {"models": model, "candidates": [str(c) for c in candidates],
                                                         "sample_flags": flags, "checks": check}, [],
                          {"models": len(result["models"])})
        show_eval(result, output / "eval.json", meta)


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Candidate/scored files, pairs, metrics.jsonl, eval.json, or folders."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML page (PNGs go beside it).",
                                dir_okay=False),
    examples: int = typer.Option(6, "--examples", help="Example pairs shown with the loop highlighted."),
) -> None:
    """One self-contained HTML page with the plots of a run: rates, fidelity, loops, pairs, training."""
    from .report import build
    from .runinfo import write_meta
    from .ui import console

    with user_errors():
        plots = build(runs, output, examples)
        meta = write_meta(output, "report", {"runs": [str(r) for r in runs], "examples": examples}, [], plots)
        console.print(f"[bold]{output}[/] — {len(plots)} plots: {', '.join(plots)}", highlight=False)
        console.print(f"[dim]run record: {meta}[/]")


def _finish(command: str, output: Path, cfg, digest, summary, extra: dict | None = None) -> None:
    from .runinfo import write_meta
    from .ui import show_summary

    numbers = summary.as_dict()
    meta = write_meta(output, command, cfg, [digest], numbers, extra)
    show_summary(numbers, output, meta, summary.skipped_messages)
