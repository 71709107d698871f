"""The `dpominer` command line. Each command parses flags, builds a config, calls one function."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from . import __version__
from .config import Flags, build_config, with_options
from .jsonl import InputError, write_json
from .judging import JudgeConfig
from .options import (
    CONFIG,
    EVAL_OPTIONS,
    OUTPUT,
    PAIR_OPTIONS,
    SAMPLE_OPTIONS,
    SCORE_OPTIONS,
    SKIP_INVALID,
    TRAIN_OPTIONS,
    TRAIN_WRITES,
    WORKERS,
)
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


def _build_checks(checks: tuple, flags: Flags, key: str, config: Path | None, guard) -> None:
    """Build every check of the config now (schemas read, modules imported), so bad input stops before
    any work, naming --check or the config file. Schema files become inputs of the run's guard (no output
    may replace one): claim outputs after this."""
    from .checks import validate

    validate(list(checks), "--check" if flags.value(key) is not None else f"{config}: {key}")
    for spec in checks:
        if spec.kind == "json-schema":
            guard.add_input(spec.arg)


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
        _build_checks(cfg.checks, flags, "checks", config, guard)
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


@app.command()
@with_options(PAIR_OPTIONS, config=PairRunConfig)
def pair(
    input: Path = typer.Argument(..., help="Candidate records, scored or not (scored on the way).", dir_okay=False),
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    stats_json: Path | None = typer.Option(
        None, "--stats-json", help="Write the summary numbers here too.", dir_okay=False),
    workers: int = WORKERS,
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
        _build_checks(cfg.score.checks, flags, "score.checks", config, guard)
        _claim(guard, output, stats=stats_json)
        with reading(input, "pairing") as digest:
            summary = run_pair(input, output, cfg, skip_invalid=skip_invalid, progress=digest, workers=workers)
        _finish("pair", output, cfg, digest, summary)
        if stats_json is not None:
            write_json(stats_json, summary.as_dict())


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
    from .runinfo import write_meta
    from .sample import sample_file
    from .ui import sampling_progress, show_sample_summary

    with user_errors() as guard:
        cfg = build_config(SampleConfig, config, flags)
        for path in (docs, config):
            guard.add_input(path)
        guard.add_model(cfg.model)
        _claim(guard, output, lock=False)  # locked through its partial file
        summary, digest, engine = sample_file(docs, output, cfg, resume=resume, skip_invalid=skip_invalid,
                                              progress=sampling_progress)
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
    from .train.loop import train as run_train
    from .ui import show_train_summary, training_progress

    with user_errors() as guard:
        cfg = build_config(TrainConfig, config, flags)
        if plan:
            return _show_plan(cfg, gpus, gpu_memory)
        main_process = os.environ.get("RANK", "0") == "0"
        for path in (pairs, config):
            guard.add_input(path)
        guard.add_model(cfg.model)
        guard.claim(output, "-o", folder=True, lock=main_process, writes=TRAIN_WRITES)  # one lock, on rank 0
        guard.resumable.append(output / "checkpoints")
        with training_progress(show=main_process) as on_event:  # a non-finite loss stops it as one line
            summary = run_train(pairs, output, cfg, resume=resume, skip_invalid=skip_invalid, on_event=on_event,
                                gpu_memory=gpu_memory)
        if main_process:
            numbers = summary.as_dict()
            meta = write_meta(output, "train", cfg, [InputDigest.of_file(pairs)], numbers,
                              {"world_size": int(os.environ.get("WORLD_SIZE", "1"))},
                              path=output / "dpominer.meta.json")
            show_train_summary(numbers, output, meta)


@app.command("eval")
@with_options(EVAL_OPTIONS, config=ScoreConfig)
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
    flags: Flags = None,
) -> None:
    """Degeneration rate (95 % CI) and fidelity of models before/after training, on the same documents."""
    from .evaluate import run_eval, sample_flags
    from .runinfo import write_meta
    from .ui import show_eval

    with user_errors() as guard:
        _eval_inputs(guard, docs, model, candidates, sample_config)
        score_cfg = build_config(ScoreConfig, None, flags)
        _build_checks(score_cfg.checks, flags, "checks", None, guard)  # schema files are inputs too
        _eval_outputs(guard, output, model, candidates)
        sampling = {"n": n, "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        sample_args = sample_flags(sampling, backend, sample_config, dpi)
        result = run_eval(docs, model, candidates, output, sample_args, score_cfg, resume=resume)
        checks_run = [spec.model_dump(exclude_none=True) for spec in score_cfg.checks]
        write_json(output / "eval.json", result | {"sampling": sampling, "checks": checks_run})
        settings = {"models": model, "candidates": [str(c) for c in candidates], "sample_flags": sample_args,
                    "checks": flags.value("checks") or []}
        meta = write_meta(output / "eval.json", "eval", settings, [], {"models": len(result["models"])})
        show_eval(result, output / "eval.json", meta)


def _eval_inputs(guard, docs: Path | None, models: list[str], candidates: list[Path], sample_config: Path | None):
    if not models and not candidates:
        raise InputError("--model or --candidates: nothing to evaluate")
    if models and docs is None:
        raise InputError("DOCS: sampling a --model needs the documents")
    for path in (docs, sample_config, *candidates):
        guard.add_input(path)
    for name in models:
        guard.add_model(name)


def _eval_outputs(guard, output: Path, models: list[str], candidates: list[Path]) -> None:
    """eval's folder, eval.json and its run record, and each input's candidate and scored files."""
    from .evaluate import plan
    from .runinfo import meta_path

    guard.claim(output, "-o", folder=True)
    for path in (output / "eval.json", meta_path(output / "eval.json")):
        guard.claim(path, "-o", lock=False)
    for label, sampled, cand_path, scored in plan(models, candidates, output):
        if sampled is not None:  # written by a `sample` child, which takes its own lock
            guard.claim(cand_path, f"candidates of {label}", lock=False)
        guard.claim(scored, f"scored file of {label}", lock=False)


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


def _show_plan(cfg: TrainConfig, gpus: int | None, gpu_memory: float | None) -> None:
    """`train --plan`: the per-GPU memory of DDP and FSDP for this model and settings, and which fits."""
    from .train.plan import make_plan, plan_rows, runtime_gpus
    from .ui import show_plan

    count, memory, bf16 = runtime_gpus(cfg, gpus, gpu_memory)
    made = make_plan(cfg, count, memory or 80 * (1 << 30), bf16)
    show_plan(made, plan_rows(made))


def _finish(command: str, output: Path, cfg, digest, summary, extra: dict | None = None) -> None:
    from .runinfo import write_meta
    from .ui import show_summary

    numbers = summary.as_dict()
    meta = write_meta(output, command, cfg, [digest], numbers, extra)
    show_summary(numbers, output, meta, summary.skipped_messages)
