"""The `dpominer` command line. Each command parses flags, builds a config, calls one function."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from . import __version__
from .config import Flags, build_config, opt, with_options
from .jsonl import InputError, write_json
from .judging import JudgeConfig
from .pairing import PairRunConfig
from .sample import SampleConfig
from .scoring import ScoreConfig
from .train.config import TrainConfig
from .ui import user_errors

app = typer.Typer(
    name="dpominer",
    help="Mine a model's own repetition loops into DPO pairs, and train them away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # a flag out of range is one plain line ("Error: Invalid value for '--flag': …")
)

CONFIG = typer.Option(None, "--config", help="TOML or JSON file with the settings; flags override it.",
                      dir_okay=False)
SKIP_INVALID = typer.Option(False, "--skip-invalid", help="Skip bad input lines (and count them) instead of stopping.")
WORKERS = typer.Option(0, "--workers", min=0, help="Processes that score (0: all cores; inputs under 8 MB "
                       "run in this one). The output is the same for any number.")
OUTPUT = typer.Option(..., "-o", "--output", help="Output JSONL (written atomically).", dir_okay=False)
MIN_COVERAGE = "Share of the reference's words a candidate that stopped on its own must reproduce (0.8)."
CHECK = typer.Option([], "--check", help="A failure check run on every candidate (repeat): json | json-schema:FILE | "
                     "regex-forbid:PATTERN | regex-require:PATTERN | max-length-ratio:R | py:MODULE:FUNCTION | "
                     "an entry point NAME[:ARG] (group dpominer.checks). Replaces the config's [[checks]].")


def _checks(values: list[str], config: Path | None, from_file: tuple, guard, key: str = "checks") -> tuple:
    """The checks to run: the --check flags, else the config file's; every one built now (schemas
    read, modules imported), so bad input stops before any work, naming the flag or the file. Schema
    files become inputs of the run's guard (no output may replace one): claim outputs after this."""
    from .checks import parse_specs, validate

    specs = tuple(parse_specs(values)) if values else from_file
    validate(list(specs), "--check" if values else f"{config}: {key}")
    for spec in specs:
        if spec.kind == "json-schema":
            guard.add_input(spec.arg)
    return specs


def _claim(guard, output: Path, *, lock: bool = True, stats: Path | None = None) -> None:
    """The outputs of a file-writing command: OUT, its run record OUT.meta.json, and --stats-json."""
    from .runinfo import meta_path

    guard.claim(output, "-o", lock=lock)
    guard.claim(meta_path(output), "run record", lock=False)
    if stats is not None:
        guard.claim(stats, "--stats-json", lock=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dpominer {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show the version and exit.")) -> None:
    """docs.jsonl → sample → score → pair → train → eval. Run `dpominer COMMAND --help` for each step."""


SCORE_OPTIONS = (
    opt("rescore", help="Recompute scores already present."),
    opt("omission.min_coverage", "--min-coverage", min=0, max=1, help=MIN_COVERAGE),
    opt("judge.model", "--judge", help="Judge model: every non-degenerate candidate gets a rubric score (for "
                                       "documents without a reference)."),
    opt("judge.backend", "--judge-backend", help="auto | vllm | hf | openai"),
    opt("judge.base_url", "--judge-base-url", help="OpenAI-compatible judge server."),
    opt("judge.server_retries", "--retries", min=0, help="Judge backend openai: retries of a failed request "
        "(backoff; default 5), then the run stops, resumable."),
)


@app.command()
@with_options(SCORE_OPTIONS, config=ScoreConfig, judge=JudgeConfig)
def score(
    input: Path = typer.Argument(..., help="Candidate records (JSONL) from `dpominer sample`.", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    rubric: Path | None = typer.Option(None, "--rubric", help="Rubric file (TOML/JSON/YAML): task, criteria "
                                       "with weights, scale.", dir_okay=False),
    resume: bool = typer.Option(False, "--resume", help="With --judge: continue OUT.partial of a killed run."),
    workers: int = WORKERS,
    check: list[str] = CHECK,
    skip_invalid: bool = SKIP_INVALID,
    flags: Flags = None,
) -> None:
    """Judge every candidate for repetition loops, failed checks and, given a reference, fidelity (CER, …)."""
    from .scoring import run_score
    from .ui import reading

    with user_errors() as guard:
        judge = flags.value("judge.model")
        for path in (input, config, rubric):
            guard.add_input(path)
        guard.add_model(judge)
        cfg = build_config(ScoreConfig, config, flags.outside("judge"))
        cfg = cfg.model_copy(update={"checks": _checks(check, config, cfg.checks, guard)})
        _claim(guard, output, lock=judge is None)  # a judged run locks through its partial file
        if judge is not None:
            from .judging import judge_config, score_with_judge

            judge_cfg = judge_config(flags.section("judge"), rubric)
            summary, digest, engine = score_with_judge(input, output, cfg, judge_cfg, resume, skip_invalid)
            _finish("score", output, {"score": cfg.model_dump(mode="json"), "judge": judge_cfg.model_dump(mode="json")},
                    digest, summary, {"judge_engine": engine})
            return
        if resume:
            raise InputError("--resume: only with --judge (plain scoring is quick to redo)")
        with reading(input, "scoring") as digest:
            summary = run_score(input, output, cfg, skip_invalid=skip_invalid, progress=digest, workers=workers)
        _finish("score", output, cfg, digest, summary)


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
    opt("policy.score_by", help="auto | fidelity | judge: how candidates rank."),
    opt("policy.min_judge_margin", min=0, max=1,
        help="Least judge-score gap (0-1) to reject a worse-judged candidate."),
)


@app.command()
@with_options(PAIR_OPTIONS, config=PairRunConfig)
def pair(
    input: Path = typer.Argument(..., help="Candidate records, scored or not (scored on the way).", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    stats_json: Path | None = typer.Option(
        None, "--stats-json", help="Write the summary numbers here too.", dir_okay=False),
    workers: int = WORKERS,
    check: list[str] = CHECK,
    skip_invalid: bool = SKIP_INVALID,
    flags: Flags = None,
) -> None:
    """Turn scored candidates into TRL-compatible preference pairs (degenerate ones rejected)."""
    from .pairing import run_pair
    from .ui import reading

    with user_errors() as guard:
        guard.add_input(input)
        guard.add_input(config)
        cfg = build_config(PairRunConfig, config, flags)
        checks = _checks(check, config, cfg.score.checks, guard, "score.checks")
        cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={"checks": checks})})
        _claim(guard, output, stats=stats_json)
        with reading(input, "pairing") as digest:
            summary = run_pair(input, output, cfg, skip_invalid=skip_invalid, progress=digest, workers=workers)
        _finish("pair", output, cfg, digest, summary)
        if stats_json is not None:
            write_json(stats_json, summary.as_dict())


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


@app.command()
@with_options(SAMPLE_OPTIONS, config=SampleConfig)
def sample(
    docs: Path = typer.Argument(..., help="Documents (JSONL): {id, prompt | messages, reference?}.", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    resume: bool = typer.Option(False, "--resume", help="Keep the records of OUT.partial and do the rest."),
    skip_invalid: bool = SKIP_INVALID,
    flags: Flags = None,
) -> None:
    """Sample n candidates per document with vLLM, transformers, or an OpenAI-compatible server."""
    import time

    from .backends import make_backend
    from .partial import PartialOutput
    from .runinfo import InputDigest, write_meta
    from .sample import pending, resume_settings, run_sample
    from .ui import sampling_progress, show_sample_summary

    with user_errors() as guard:
        cfg = build_config(SampleConfig, config, flags)
        for path in (docs, config):
            guard.add_input(path)
        guard.add_model(cfg.model)
        _claim(guard, output, lock=False)  # locked through its partial file
        partial = PartialOutput(output, resume_settings(cfg))
        try:
            digest = InputDigest(docs)  # fed while the documents are checked, before the model loads
            done, left = pending(docs, partial, cfg, resume=resume, skip_invalid=skip_invalid, on_line=digest)
            engine = make_backend(cfg)
            start = time.perf_counter()
            with sampling_progress(left) as on_chunk:
                summary = run_sample(docs, partial, cfg, engine, done=done, skip_invalid=skip_invalid,
                                     on_chunk=on_chunk)
        finally:
            partial.close()
        summary.seconds = round(time.perf_counter() - start, 2)
        numbers = summary.as_dict()
        meta = write_meta(output, "sample", cfg, [digest], numbers, {"engine": engine.describe()})
        show_sample_summary(numbers, output, meta)


@app.command()
def merge(
    inputs: list[Path] = typer.Argument(..., help="Candidate files of the shards.", dir_okay=False),
    output: Path = OUTPUT,
    docs: Path | None = typer.Option(None, "--docs", help="The documents, to report any no shard produced."),
    strict: bool = typer.Option(False, "--strict", help="With --docs: exit 1, writing nothing, when ids are missing "
                                "or duplicated."),
) -> None:
    """Join `sample --shard I/N` outputs into one file; report missing and duplicate ids."""
    from .runinfo import write_meta
    from .shards import merge as merge_files
    from .ui import console, counts_table, err_console

    with user_errors() as guard:
        for path in (*inputs, docs):
            guard.add_input(path)
        _claim(guard, output)
        summary = merge_files(inputs, output, docs, strict=strict)
        numbers = summary.as_dict()
        write_meta(output, "merge", {"inputs": [str(p) for p in inputs], "docs": str(docs) if docs else None}, [],
                   numbers)
        rows = [("records", str(summary.records)), ("duplicate ids dropped", str(summary.duplicates))]
        if docs is not None:
            rows.append(("documents missing", str(summary.missing)))
        console.print(counts_table(str(output), rows))
        for label, ids in (("duplicate", summary.duplicate_ids), ("missing", summary.missing_ids)):
            if ids:
                err_console.print(f"[yellow]{label}:[/] {', '.join(ids)}", highlight=False)


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
    opt("rejected_loop_copies", min=0, help="Cut every rejected loop to its onset + K copies (3; 0 keeps it whole)."),
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


@app.command()
@with_options(TRAIN_OPTIONS, config=TrainConfig)
def train(
    pairs: Path = typer.Argument(..., help="Preference pairs (JSONL) from `dpominer pair`, or any TRL-format pairs.",
                                 dir_okay=False),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the model, metrics.jsonl and checkpoints.",
                                file_okay=False),
    config: Path | None = CONFIG,
    resume: bool = typer.Option(False, "--resume", help="Go on from the newest checkpoint in OUTPUT."),
    skip_invalid: bool = SKIP_INVALID,
    plan: bool = typer.Option(False, "--plan", help="Print the per-GPU memory of DDP and FSDP and which fits; "
                              "train nothing."),
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="GPUs for --plan (default: the processes, or the "
                                    "GPUs here)."),
    gpu_memory: float | None = typer.Option(None, "--gpu-memory", min=0, help="GiB per GPU for --plan and the "
                                            "check before training (default: this GPU's)."),
    flags: Flags = None,
) -> None:
    """Train the model on the pairs with DPO (our own loop; precomputed reference; LoRA; torchrun; FSDP)."""
    from .runinfo import InputDigest, write_meta
    from .train.loop import TrainingStopped
    from .train.loop import train as run_train
    from .ui import show_train_summary, training_progress

    with user_errors() as guard:
        cfg = build_config(TrainConfig, config, flags)
        if plan:
            from .train.plan import make_plan, plan_rows, runtime_gpus
            from .ui import show_plan

            count, memory, bf16 = runtime_gpus(cfg, gpus, gpu_memory)
            made = make_plan(cfg, count, memory or 80 * (1 << 30), bf16)
            show_plan(made, plan_rows(made))
            return
        main_process = os.environ.get("RANK", "0") == "0"
        for path in (pairs, config):
            guard.add_input(path)
        guard.add_model(cfg.model)
        guard.claim(output, "-o", folder=True, lock=main_process, writes=TRAIN_WRITES)  # one lock, on rank 0
        guard.resumable.append(output / "checkpoints")
        try:
            with training_progress(show=main_process) as on_event:
                summary = run_train(pairs, output, cfg, resume=resume, skip_invalid=skip_invalid, on_event=on_event,
                                    gpu_memory=gpu_memory)
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
    n: int = typer.Option(1, "-n", min=1, help="Candidates per document."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0, help="0 is greedy."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    backend: str = typer.Option("auto", "--backend", help="auto | vllm | hf | openai"),
    dpi: int | None = typer.Option(None, "--dpi", min=1, help="Resolution PDF pages are rendered at (150)."),
    sample_config: Path | None = typer.Option(None, "--sample-config", help="More `sample` settings (TOML/JSON).",
                                              dir_okay=False),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed eval: keep the models sampled, go on "
                                "with the one interrupted (its OUTPUT/LABEL.candidates.jsonl.partial)."),
    check: list[str] = CHECK,
) -> None:
    """Degeneration rate (95 % CI) and fidelity of models before/after training, on the same documents."""
    from .evaluate import plan, run_eval
    from .runinfo import meta_path, write_meta
    from .ui import show_eval

    with user_errors() as guard:
        if not model and not candidates:
            raise InputError("--model or --candidates: nothing to evaluate")
        if model and docs is None:
            raise InputError("DOCS: sampling a --model needs the documents")
        for path in (docs, sample_config, *candidates):
            guard.add_input(path)
        for name in model:
            guard.add_model(name)
        score_cfg = ScoreConfig(checks=_checks(check, None, (), guard))  # schema files: inputs too
        guard.claim(output, "-o", folder=True)
        for path in (output / "eval.json", meta_path(output / "eval.json")):
            guard.claim(path, "-o", lock=False)
        for label, sampled, cand_path, scored in plan(model, candidates, output):
            if sampled is not None:  # written by a `sample` child, which takes its own lock
                guard.claim(cand_path, f"candidates of {label}", lock=False)
            guard.claim(scored, f"scored file of {label}", lock=False)
        flags = ["-n", str(n), "--temperature", str(temperature), "--max-tokens", str(max_tokens),
                 "--seed", str(seed), "--backend", backend]
        flags += ["--config", str(sample_config)] if sample_config else []
        flags += ["--dpi", str(dpi)] if dpi else []
        result = run_eval(docs, model, candidates, output, flags, score_cfg, resume=resume)
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
    examples: int = typer.Option(6, "--examples", min=0, help="Example pairs shown with the loop highlighted."),
) -> None:
    """One self-contained HTML page with the plots of a run: rates, fidelity, loops, pairs, training."""
    from .report import build, input_files
    from .runinfo import write_meta
    from .ui import console

    with user_errors() as guard:
        for path in input_files(runs):
            guard.add_input(path)
        _claim(guard, output)
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
