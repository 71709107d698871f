"""The `dpominer` command line. Each command parses flags, builds a config, calls one function."""

from __future__ import annotations

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
    skip_invalid: bool = SKIP_INVALID,
) -> None:
    """Judge every candidate for repetition loops and, given a reference, its fidelity (CER, …)."""
    from .mining import ScoreConfig, run_score
    from .ui import reading

    with user_errors():
        from .config import build_config

        cfg = build_config(ScoreConfig, config, {"rescore": ("--rescore", rescore)})
        with reading(input, "scoring") as digest:
            summary = run_score(input, output, cfg, skip_invalid=skip_invalid, progress=digest)
        _finish("score", output, cfg, digest, summary)


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
    stats_json: Path | None = typer.Option(
        None, "--stats-json", help="Write the summary numbers here too.", dir_okay=False),
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
        })
        with reading(input, "pairing") as digest:
            summary = run_pair(input, output, cfg, skip_invalid=skip_invalid, progress=digest)
        _finish("pair", output, cfg, digest, summary)
        if stats_json is not None:
            write_json(stats_json, summary.as_dict())


def _finish(command: str, output: Path, cfg, digest, summary) -> None:
    from .runinfo import write_meta
    from .ui import show_summary

    numbers = summary.as_dict()
    meta = write_meta(output, command, cfg, [digest], numbers)
    show_summary(numbers, output, meta, summary.skipped_messages)
