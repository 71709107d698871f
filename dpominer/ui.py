"""Terminal output: progress bars, summaries, one-line errors. Everything rich lives here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
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

from .guard import Guard
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
    """One line on stderr, the message as written: a path or pattern holding ``[…]`` or ``:name:`` is not
    read as rich markup or an emoji code."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)


@contextmanager
def user_errors() -> Iterator[Guard]:
    """One command run under its output guard. Bad input, an OS error (full disk, read-only folder, no
    permission) or a stop (Ctrl-C, SIGTERM, SIGHUP) → one line on stderr naming the path and the cause,
    exit code 1, no traceback; temp files are gone and a resumable partial file stays resumable."""
    import typer

    from .guard import Interrupted, describe_os_error, guarded
    from .jsonl import InputError

    with guarded() as guard:
        try:
            yield guard
        except InputError as exc:
            error(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:
            where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
            error(f"{where}: {describe_os_error(exc)}" if where else describe_os_error(exc))
            raise typer.Exit(1) from None
        except (Interrupted, KeyboardInterrupt) as exc:
            name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
            kept = [str(p) for p in guard.resumable if p.exists()]
            left = f"{kept[0]} kept: rerun with --resume to continue" if kept else "no output written"
            error(f"{guard.primary or 'dpominer'}: stopped by {name}; {left}")
            raise typer.Exit(1) from None


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
    for name, counts in summary.get("checks", {}).items():
        failed, checked = counts["failed"], counts["checked"]
        rows.append((f"  failed check {name}", f"{failed} of {checked} ({failed / checked:.1%})" if checked else "0"))
    if summary["mean_cer"] is not None:
        rows.append(("mean CER", f"{summary['mean_cer']:.4f}"))
    for verdict, n in sorted(summary.get("omission", {}).items()):
        rows.append((f"  {'omission (stopped early)' if verdict == 'omission' else verdict}",
                     f"{n} ({n / cand:.1%})" if cand else "0"))
    if summary["pairs"] or summary["documents_without_pair"]:
        rows.append(("pairs", f"[bold]{summary['pairs']}[/]"))
        for reason, n in summary["pairs_by_reason"].items():
            rows.append((f"  {reason}", str(n)))
        for source, n in summary["chosen_source"].items():
            rows.append((f"  chosen from {source}", str(n)))
        for reason, n in summary["documents_without_pair"].items():
            rows.append((f"  no pair: {reason}", str(n)))
        lengths = summary.get("pair_lengths")
        if lengths:
            longer = lengths["rejected_longer_share"]
            rows.append(("  chosen/rejected length", f"{lengths['chosen_rejected_ratio']:.2f} (chars; geometric mean "
                         f"per pair {lengths['chosen_rejected_ratio_geomean']:.2f})"))
            rows.append(("  rejected side longer", f"[yellow]{longer:.0%}[/] (teaches length, not loops)"
                         if longer > 0.9 else f"{longer:.0%}"))
    judge = summary.get("judge")
    if judge:
        rows.append(("judged", f"[bold]{judge.get('judged', 0)}[/] ({judge.get('retried_ok', 0)} on a retry)"))
        rows.append(("  judge errors (excluded from pairing)",
                     f"[yellow]{judge['errors']}[/]" if judge.get("errors") else "0"))
        rows.append(("  not judged: degenerate or failed", str(judge.get("skipped_degenerate_or_error", 0))))
        if judge.get("judge_vs_cer_spearman") is not None:
            rows.append(("  judge score vs CER (Spearman)",
                         f"{judge['judge_vs_cer_spearman']:+.3f} over {judge['judge_vs_cer_n']} (negative = agree)"))
    console.print(counts_table(f"{output}", rows))
    for message in skipped[:5]:
        err_console.print(f"[yellow]skipped[/] {message}", highlight=False)
    console.print(f"[dim]run record: {meta}[/]")


@contextmanager
def judging_progress(total: int):
    """A bar over the input's records while the judge works through them; yields the per-chunk callback."""
    columns = (TextColumn("[bold]judging"), BarColumn(), TextColumn("{task.completed}/{task.total} records"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("judging", total=total)
        yield lambda records: progress.advance(task, records)


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


@contextmanager
def training_progress(show: bool = True):
    """Bars for the reference pass and the optimizer steps; yields the loop's event callback."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not show) as progress:
        tasks: dict[str, int] = {}

        def on_event(kind: str, data: dict) -> None:
            if kind == "data" and show:
                cut = data["truncation"]
                err_console.print(f"pairs: {data['train_pairs']} train, {data['eval_pairs']} eval "
                                  f"({data['pairs_read']} read; dropped {cut['dropped'] or 'none'}); "
                                  f"{_token_sources(data)}", highlight=False)
            elif kind == "ref_start":
                tasks["ref"] = progress.add_task("reference log-probs", total=data["pairs"], info="pairs")
            elif kind == "ref_batch":
                progress.advance(tasks["ref"], data["pairs"])
            elif kind == "start":
                tasks["steps"] = progress.add_task("training", total=data["total"], completed=data["start"], info="")
            elif kind == "step":
                info = (f"loss {data['loss']:.4f} · margin {data['rewards/margins']:+.3f} · "
                        f"acc {data['rewards/accuracies']:.2f} · {data['tokens_per_s']:.0f} tok/s")
                progress.update(tasks["steps"], completed=data["step"], info=info)

        yield on_event


def _token_sources(summary: dict) -> str:
    why = summary["sides_tokenized"]
    reasons = f" ({', '.join(f'{k}: {v}' for k, v in why.items())})" if why else ""
    return f"{summary['sides_sampled']} sides as sampled, {sum(why.values())} tokenised{reasons}"


def show_train_summary(summary: dict, output: Path, meta: Path) -> None:
    final = summary["final"]
    rows = [("pairs trained on", str(summary["train_pairs"])), ("pairs held out", str(summary["eval_pairs"])),
            ("optimizer steps", str(summary["steps"]))]
    if summary["resumed_from"] is not None:
        rows.append(("resumed from step", str(summary["resumed_from"])))
    cut = summary["truncation"]
    for key in ("prompts_cut", "chosen_cut", "rejected_cut", "loops_kept_by_moving_the_cut"):
        if cut[key]:
            rows.append((key.replace("_", " "), str(cut[key])))
    for reason, n in cut["dropped"].items():
        rows.append((f"dropped: {reason}", f"[yellow]{n}[/]"))
    rows.append(("completion tokens", _token_sources(summary)))
    for reason, n in summary.get("skipped", {}).items():
        rows.append((f"invalid pairs skipped: {reason}", f"[yellow]{n}[/]"))
    if summary["ref_cache"]:
        rows.append(("reference log-probs", "cache hit" if summary["ref_cache_hit"] else "computed, cached"))
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        if key in final:
            rows.append((f"last step {key}", f"{final[key]:.4f}"))
    for key, value in summary["final_eval"].items():
        rows.append((key, f"{value:.4f}"))
    rate = summary["tokens"] / max(summary["seconds"], 1e-9)
    rows.append(("tokens", f"{summary['tokens']} ({rate:.0f} tok/s overall)"))
    rows.append(("wall time", f"{summary['seconds']:.1f} s"))
    console.print(counts_table(f"{output}", rows))
    console.print(f"[dim]run record: {meta}[/]")


def show_plan(plan, rows: list[tuple[str, str, str]]) -> None:
    """The `train --plan` table (GiB per GPU) and a last line a script can read: `choose: ddp|fsdp|none`."""
    size = plan.size
    table = Table(title=f"per-GPU memory, GiB: {plan.gpus} GPU(s) of {plan.gpu_bytes / (1 << 30):.1f} GiB, "
                        f"{'bf16' if plan.bf16 else 'fp32'}", title_justify="left")
    table.add_column("")
    table.add_column("DDP", justify="right")
    table.add_column("FSDP", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(f"{size.params / 1e9:.3f} B weights, {size.trainable / 1e9:.3f} B trainable; FSDP units of up to "
                  f"{size.largest_unit / 1e6:.1f} M weights, {size.root / 1e6:.1f} M at the root", highlight=False)
    console.print(table)
    console.print(f"choose: {plan.choice()}", highlight=False)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0%}"


def show_eval(result: dict, path: Path, meta: Path) -> None:
    first = result["models"][0]
    table = Table(title=f"{path} — {first['documents']} documents, {first['candidates']} candidates per model",
                  title_justify="left", title_style="bold")
    for name in ("model", "degenerate (95 % CI)", "Δ", "suspect", "omission (95 % CI)", "Δ", "coverage median / mean",
                 "docs looping", "hit max", "CER mean", "Δ CER"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row, change in zip(result["models"], result["changes"], strict=True):
        lo, hi = row["degeneration_ci95"]
        omission = "–"
        if row.get("omission_rate") is not None:
            o_lo, o_hi = row["omission_ci95"]
            omission = f"{row['omission_rate']:.1%} ({o_lo:.0%}–{o_hi:.0%})"
        coverage = "–" if row.get("coverage_median") is None else \
            f"{row['coverage_median']:.2f} / {row['coverage_mean']:.2f}"
        table.add_row(row["label"], f"{row['degeneration_rate']:.1%} ({lo:.0%}–{hi:.0%})",
                      _pct(change["degeneration_change"]), f"{row.get('suspect_rate', 0.0):.1%}", omission,
                      _pct(change.get("omission_change")), coverage,
                      f"{row['docs_with_loop_rate']:.0%}",
                      f"{row['hit_max_tokens_rate']:.0%}", "–" if row["cer_mean"] is None else f"{row['cer_mean']:.3f}",
                      _pct(change["cer_change"]))
    console.print(table)
    for change in result["changes"][1:]:
        if change.get("verdict"):
            style = "bold red" if "stop early" in change["verdict"] else "dim"
            console.print(f"[{style}]{change['label']}: {change['verdict']}[/]", highlight=False)
    if any("checks" in row for row in result["models"]):
        console.print(_checks_table(result))
    console.print(f"[dim]run record: {meta}[/]")


def _checks_table(result: dict) -> Table:
    """Failure rate per check per model, beside the degeneration rate, with Wilson intervals."""
    names = list(dict.fromkeys(n for row in result["models"] for n in row.get("checks", {})))
    table = Table(title="failure checks (share of candidates failing, 95 % CI)", title_justify="left")
    for name in ("model", "degenerate", "any check", *names):
        table.add_column(name, justify="left" if name == "model" else "right")

    def cell(rate: float, ci: list[float], change: float | None) -> str:
        return f"{rate:.1%} ({ci[0]:.0%}–{ci[1]:.0%})" + ("" if change is None else f" {change:+.0%}")

    for row, change in zip(result["models"], result["changes"], strict=True):
        checks = row.get("checks", {})
        per = [cell(checks[n]["failure_rate"], checks[n]["failure_ci95"], change.get("check_changes", {}).get(n))
               if n in checks else "–" for n in names]
        anyc = cell(row["failed_any_check_rate"], row["failed_any_check_ci95"], change.get("failed_any_check_change")) \
            if "checks" in row else "–"
        table.add_row(row["label"], cell(row["degeneration_rate"], row["degeneration_ci95"],
                                         change["degeneration_change"]), anyc, *per)
    return table
