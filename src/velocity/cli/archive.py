"""``velocity archive``, ``velocity reproduce`` and ``velocity inspect``: the reproducibility loop.

Thin shells over ``velocity.archives`` (write a crate; verify, re-run, compare, describe); they
parse options, call the library and print.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from velocity.cli._app import app, err_console, out_console, print_json, stop_cleanly
from velocity.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table

    from velocity.archives import (
        ArchivedSweep,
        ArchiveInspection,
        PackageDrift,
        ReproductionReport,
    )

__all__ = [
    "archive_command",
    "inspect_command",
    "parse_run_names",
    "reproduce_command",
]

_VERDICT_STYLE = {"ok": "green", "MISMATCH": "bold red", "MISSING": "yellow", "FAILED": "red"}


def parse_run_names(values: list[str] | None, extra: list[str] | None) -> list[str] | None:
    """Run names from ``--runs a,b --runs c d``: repeated, comma-separated, or several values
    after one ``--runs`` (those arrive as extra arguments). None when no run was selected."""
    names = [part for value in values or [] for part in value.split(",") if part]
    if extra:
        if not values:
            raise InputError(
                f"unexpected argument {extra[0]!r}; select runs with --runs NAME ... "
                "(ARCHIVE comes first)"
            )
        names += [part for value in extra for part in value.split(",") if part]
    return names or None


def _drift_lines(drift: list[PackageDrift], limit: int = 12) -> list[str]:
    lines = [
        f"  {d.package}: {d.archived or 'absent'} archived, {d.current or 'absent'} here"
        for d in drift[:limit]
    ]
    if len(drift) > limit:
        lines.append(f"  ... and {len(drift) - limit} more (see reproduction.json)")
    return lines


def _warn_environment(_: ArchivedSweep, drift: list[PackageDrift], notes: list[str]) -> None:
    if drift:
        err_console.print(
            "[yellow]warning:[/] this environment differs from the archived one "
            f"({len(drift)} packages):",
            highlight=False,
        )
        for line in _drift_lines(drift):
            err_console.print(line, highlight=False, markup=False)
    for note in notes:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False)


def _progress(event: dict[str, Any]) -> None:
    if event.get("event") == "run":
        line = (
            f"[{event.get('done')}/{event.get('total')}] {event.get('name')}: {event.get('status')}"
        )
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _verdict_table(report: ReproductionReport) -> Table:
    from rich.table import Table

    mode = "bitwise" if report.exact else f"rel_tol={report.tolerance:g}"
    table = Table(title=f"reproduction of {report.archive.name} ({mode})")
    for column in ("run", "archived", "now", "verdict", "detail"):
        table.add_column(column)
    for run in report.runs:
        style = _VERDICT_STYLE.get(run.verdict, "")
        table.add_row(
            run.name,
            run.archived_status or "-",
            run.reproduced_status or "-",
            f"[{style}]{run.verdict}[/]" if style else run.verdict,
            run.detail,
        )
    return table


@app.command("archive")
def archive_command(
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR", help="A finished sweep folder."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Archive file (default: <OUT_DIR>.crate.zip)."
    ),
    author: str | None = typer.Option(None, "--author", help="Author's name (a Person)."),
    affiliation: str | None = typer.Option(
        None, "--affiliation", help="Author's organization; also the crate's publisher."
    ),
    affiliation_url: str | None = typer.Option(
        None, "--affiliation-url", help="URL of that organization."
    ),
    license_id: str = typer.Option(
        "CC-BY-4.0", "--license", help="SPDX license identifier of the archive."
    ),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete", help="Archive an unfinished sweep, recording missing runs."
    ),
    no_data: bool = typer.Option(
        False, "--no-data", help="Leave the runs' user data files out (reproduce --data-dir)."
    ),
    include_code: bool = typer.Option(
        False, "--include-code", help="Add the wheel of this velocity (offline install)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing archive file."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> int:
    """Pack a finished sweep into one deterministic RO-Crate zip (Process Run Crate 0.5)."""
    from velocity.api import archive

    result = archive(
        out_dir,
        output,
        author=author,
        affiliation=affiliation,
        affiliation_url=affiliation_url,
        license_id=license_id,
        allow_incomplete=allow_incomplete,
        include_data=not no_data,
        include_code=include_code,
        force=force,
    )
    for warning in result.warnings:
        err_console.print(f"[yellow]note:[/] {warning}", highlight=False)
    if json_output:
        print_json(
            {
                "archive": str(result.path),
                "sha256": result.sha256,
                "size": result.size,
                "runs": result.runs,
                "missing_runs": result.missing_runs,
            }
        )
        return 0
    out_console.print(f"wrote {result.path} ({result.size} bytes, {len(result.runs)} runs)")
    out_console.print(f"sha256 {result.sha256}", highlight=False)
    if result.missing_runs:
        out_console.print(
            f"[yellow]incomplete:[/] no results for {', '.join(result.missing_runs)}",
            highlight=False,
        )
    return 0


@app.command(
    "reproduce",
    context_settings={"allow_interspersed_args": True},
)
def reproduce_command(
    archive: Path = typer.Argument(..., metavar="ARCHIVE", help="A velocity .crate.zip."),
    more_runs: list[str] | None = typer.Argument(
        None, metavar="NAME", help="More run names after --runs NAME.", show_default=False
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the re-run (default: out/<UTC timestamp>-reproduce)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Exit 1 unless every run matched (status and every metric)."
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="Relative tolerance (math.isclose), default 1e-6."
    ),
    exact: bool = typer.Option(False, "--exact", help="Require bitwise-equal metrics."),
    runs: list[str] | None = typer.Option(
        None, "--runs", help="Only these runs: --runs a b, --runs a --runs b or --runs a,b."
    ),
    parallel: int | None = typer.Option(
        None, "--parallel", help="Worker processes (default: number of cores)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with the data files a --no-data archive leaves out."
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print reproduction.json's content on stdout."
    ),
) -> int:
    """Verify an archive, re-run its runs with the archived specs and compare the results."""
    from velocity.api import reproduce
    from velocity.artifacts import encode_floats

    selected = parse_run_names(runs, more_runs)
    with stop_cleanly():
        report = reproduce(
            archive,
            out=out,
            check=check,
            exact=exact,
            tolerance=tolerance,
            runs=selected,
            parallel=parallel,
            command=["velocity", *sys.argv[1:]] if sys.argv[1:] else None,
            on_event=_progress,
            on_verified=_warn_environment,
            data_dir=data_dir,
        )
    if json_output:
        print_json(encode_floats(report.to_json()))
    else:
        out_console.print(_verdict_table(report))
        for note in report.notes:
            out_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
        matched = sum(r.verdict == "ok" for r in report.runs)
        verdict = "reproduced" if report.all_matched else "NOT reproduced"
        out_console.print(
            f"{verdict}: {matched}/{len(report.runs)} runs matched; "
            f"report in {report.out_dir / 'reproduction.json'}",
            highlight=False,
        )
    return report.exit_code


def _print_inspection(info: ArchiveInspection) -> None:
    from rich.table import Table

    out_console.print(f"[bold]{info.name or info.path.name}[/]", highlight=False)
    rows = [
        ("archive", f"{info.path} ({info.size} bytes, {info.files} files)"),
        ("sha256", info.sha256),
        ("published", info.date_published or "-"),
        ("authors", ", ".join(info.authors) or "-"),
        ("license", info.license or "-"),
        ("velocity", info.velocity_version or "-"),
        ("python", info.python or "-"),
        ("platform", info.platform or "-"),
        ("numpy", info.numpy or "-"),
        ("packages", f"{len(info.packages)} recorded (see environment.txt)"),
    ]
    for key, value in rows:
        out_console.print(f"{key:>10}: {value}", highlight=False, markup=False)
    table = Table(title="runs")
    for column in ("run", "status", "rounds", "test_accuracy", "test_loss"):
        table.add_column(column)
    for run in info.runs:
        table.add_row(
            run["name"],
            str(run.get("status")),
            str(run.get("rounds", "-")),
            _fmt(run.get("test_accuracy")),
            _fmt(run.get("test_loss")),
        )
    out_console.print(table)
    if info.missing_runs:
        out_console.print(f"incomplete: no results for {', '.join(info.missing_runs)}")
    for note in info.notes:
        out_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if info.verified:
        out_console.print(
            "[green]verified[/]: every file matches its recorded sha256 and size; "
            "the records agree with each other"
        )
    else:
        err_console.print(f"[red]verification FAILED[/]: {info.problem}", highlight=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


@app.command("inspect")
def inspect_command(
    archive: Path = typer.Argument(..., metavar="ARCHIVE", help="A velocity .crate.zip."),
    json_output: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> int:
    """Show what an archive holds and whether it verifies, without running anything."""
    from velocity.api import inspect
    from velocity.artifacts import encode_floats

    info = inspect(archive)
    if json_output:
        print_json(encode_floats(info.to_json()))
    else:
        _print_inspection(info)
    return 0 if info.verified else 2
