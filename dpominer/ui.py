"""Terminal output: progress bars, summaries, one-line errors. Everything rich lives here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .runinfo import InputDigest

console = Console()
err_console = Console(stderr=True)


@contextmanager
def reading(path: Path, description: str) -> Iterator[InputDigest]:
    """A progress bar over the bytes of ``path``; yields the per-line callback (also a digest)."""
    total = path.stat().st_size if path.exists() else None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield InputDigest(path, advance=lambda n: progress.advance(task, n))


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def counts_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column(style="cyan")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def show_summary(summary: dict, output: Path, meta: Path, skipped: list[str]) -> None:
    cand = summary["candidates"]
    rows = [("documents", str(summary["documents"])), ("candidates", str(cand))]
    if summary["invalid_lines"]:
        rows.append(("invalid lines skipped", f"[yellow]{summary['invalid_lines']}[/]"))
    for verdict in ("degenerate", "suspect", "clean"):
        n = summary["verdicts"].get(verdict, 0)
        rows.append((f"  {verdict}", f"{n} ({n / cand:.1%})" if cand else "0"))
    for kind, n in sorted(summary["kinds"].items(), key=lambda kv: -kv[1]):
        rows.append((f"    kind: {kind}", str(n)))
    if summary["mean_cer"] is not None:
        rows.append(("mean CER", f"{summary['mean_cer']:.4f}"))
    if summary["pairs"] or summary["documents_without_pair"]:
        rows.append(("pairs", f"[bold]{summary['pairs']}[/]"))
        for reason, n in summary["pairs_by_reason"].items():
            rows.append((f"  {reason}", str(n)))
        for source, n in summary["chosen_source"].items():
            rows.append((f"  chosen from {source}", str(n)))
        for reason, n in summary["documents_without_pair"].items():
            rows.append((f"  no pair: {reason}", str(n)))
    console.print(counts_table(f"{output}", rows))
    for message in skipped[:5]:
        err_console.print(f"[yellow]skipped[/] {message}", highlight=False)
    console.print(f"[dim]run record: {meta}[/]")


@contextmanager
def sampling_progress(total: int):
    """A bar over documents with docs/s, candidates/s and tokens/s; yields the per-chunk callback."""
    import time

    columns = (TextColumn("[bold]sampling"), BarColumn(), TextColumn("{task.completed}/{task.total} docs"),
               TextColumn("{task.fields[rates]}"), TimeElapsedColumn(), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("sampling", total=total, rates="")

        def on_chunk(docs: int, candidates: int, tokens: int) -> None:
            elapsed = max(time.perf_counter() - start, 1e-9)
            done = progress.tasks[0].completed + docs
            rates = f"{done / elapsed:.2f} docs/s · {candidates / elapsed:.1f} cand/s · {tokens / elapsed:.0f} tok/s"
            progress.update(task, advance=docs, rates=rates)

        yield on_chunk


def show_sample_summary(summary: dict, output: Path, meta: Path) -> None:
    seconds = max(summary["seconds"], 1e-9)
    rows = [("documents sampled", str(summary["documents"])), ("kept from an earlier run", str(summary["resumed"])),
            ("candidates", str(summary["candidates"])),
            ("tokens generated", f"{summary['tokens']} ({summary['tokens'] / seconds:.0f} tok/s)"),
            ("wall time", f"{summary['seconds']:.1f} s")]
    rows += [(f"  finish: {reason}", str(n)) for reason, n in sorted(summary["finish_reasons"].items())]
    if summary["errors"]:
        rows.append(("documents with errors", f"[yellow]{summary['errors']}[/]"))
    console.print(counts_table(str(output), rows))
    for example in summary["error_examples"]:
        err_console.print(f"[yellow]error[/] {example}", highlight=False)
    console.print(f"[dim]run record: {meta}[/]")
