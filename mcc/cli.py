"""The `mcc` command: parse, call the library, render. Nothing else lives here."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console

from mcc import api
from mcc.display import (
    ProgressView, events_table, redact, resources_table, runs_table, summary_view,
)
from mcc.errors import CleanIncomplete, MccError

out = Console()
err = Console(stderr=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(redact(value), default=str, sort_keys=True))


class McGroup(click.Group):
    """Turns library errors into one clear paragraph and an exit code; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MccError as exc:
            if ctx.params.get("debug") or os.environ.get("MCC_DEBUG"):
                traceback.print_exc()
            if isinstance(exc, CleanIncomplete) and exc.report is not None and _wants_json(ctx):
                emit_json(exc.report.to_dict())
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted. A run keeps going in the background: `mcc status` shows it, "
                      "`mcc resume RUN` follows it again, `mcc clean --run RUN` stops and removes it.")
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug of ours: say so, briefly
            if ctx.params.get("debug") or os.environ.get("MCC_DEBUG"):
                raise
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
                      "Re-run with --debug for the traceback and report it. The ledger is intact.", markup=True,
                      highlight=False)
            ctx.exit(70)


def _wants_json(ctx: click.Context) -> bool:
    sub = ctx.invoked_subcommand
    return "--json" in sys.argv if sub else False


@click.group(cls=McGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="materialsCloudCompute")
def main(debug: bool) -> None:
    """mcc — run a sweep of independent subproblems locally or on AWS, get one HDF5 file back.

    The ledger lives in $MCC_HOME (default ~/.mcc).
    """


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(f)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a project with points.py, entry.py and mcc.toml.

    Example: mcc init mysweep && mcc run mysweep
    """
    from mcc.scaffold import init_project

    for path in init_project(directory):
        out.print(f"created {path}")
    out.print(f"next: edit {directory}/points.py and entry.py, then `mcc run {directory}`")


def _follow(as_json: bool, call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    if as_json or not out.is_terminal:
        result = call(**kwargs)
    else:
        with ProgressView(out) as view:
            result = call(on_progress=view.update, **kwargs)
    return result


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        out.print(summary_view(result))
    if result["state"] == "failed":
        sys.exit(1)


@main.command()
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["local", "aws"]), help="Where to run (default: local).")
@click.option("--workers", type=int, help="Number of workers.")
@click.option("--chunk-size", type=int, help="Points per subproblem (default: ~2 s of work).")
@click.option("--max-attempts", type=int, help="Attempts per subproblem before it is dead.")
@click.option("--entry", help='"module:function" or "script.py".')
@click.option("--point-timeout", type=float, help="Seconds allowed per point.")
@click.option("--detach", is_flag=True, help="Return once the run is launched; follow with `mcc resume`.")
@click.option("--keep", is_flag=True, help="Keep the queue and processes after the run.")
@json_option
def run(directory: Path, as_json: bool, **options: Any) -> None:
    """Run the sweep in DIRECTORY (default: the current one).

    Example: mcc run examples/kpoints --workers 4
    """
    def created(run_row: Any) -> None:
        if not as_json:
            err.print(f"run [bold]{run_row.id}[/]: {run_row.points} points", highlight=False)

    result = _follow(as_json, api.run, project_dir=directory, on_created=created, **options)
    _report(result, as_json)


@main.command()
@click.argument("run_id")
@click.option("--detach", is_flag=True, help="Relaunch what is needed, then return.")
@click.option("--keep", is_flag=True, help="Keep the queue and processes after the run.")
@json_option
def resume(run_id: str, detach: bool, keep: bool, as_json: bool) -> None:
    """Resume RUN_ID from its current state and drive it to the end.

    Example: mcc resume r-20261126-1a2b3c
    """
    result = _follow(as_json, api.resume, run_id=run_id, detach=detach, keep=keep)
    _report(result, as_json)


@main.command()
@click.argument("run_id", required=False)
@json_option
def status(run_id: str | None, as_json: bool) -> None:
    """Show every run, or one run with its progress and failures.

    Example: mcc status --json
    """
    result = api.status(run_id)
    if as_json:
        emit_json(result)
    elif isinstance(result, list):
        out.print(runs_table(result))
    else:
        out.print(summary_view(result))


@main.group()
def ledger() -> None:
    """Inspect the ledger: runs, resources and their events."""


@ledger.command("show")
@click.option("--run", "run_id", help="Only this run.")
@click.option("--kind", help="Only resources of this kind (directory, cache, instance, …).")
@click.option("--state", help="Only resources in this state.")
@click.option("--events", "with_events", is_flag=True, help="Also list events (newest last).")
@click.option("--limit", type=int, default=200, show_default=True, help="Events to show.")
@json_option
def ledger_show(run_id: str | None, kind: str | None, state: str | None, with_events: bool, limit: int,
                as_json: bool) -> None:
    """Every run and resource with its state.

    Example: mcc ledger show --kind instance --state active
    """
    doc = api.ledger_view(run_id=run_id, kind=kind, state=state, events=limit if with_events else 0)
    if as_json:
        emit_json(doc)
        return
    out.print(f"ledger {doc['ledger']['uuid']} at {doc['ledger']['path']}", highlight=False)
    out.print(runs_table(doc["runs"]))
    out.print(resources_table(doc["resources"]))
    if with_events:
        out.print(events_table(doc["events"]))


@main.command()
@click.option("--run", "run_id", help="Clean only this run.")
@click.option("--all", "all_", is_flag=True, help="Clean every run and resource of this ledger.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def clean(run_id: str | None, all_: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Delete the resources of one run or of every run, then verify nothing tagged remains.

    Example: mcc clean --all --yes
    """
    if bool(run_id) == all_:
        raise click.UsageError("give exactly one of --run RUN or --all")
    if not dry_run and not yes and sys.stdin.isatty():
        preview = api.clean(run_id, all=all_, dry_run=True)
        out.print(f"{len(preview['deleted'])} resource(s) in the ledger, {len(preview['adopted'])} found by the sweep")
        if not click.confirm("delete them?", default=False):
            raise click.Abort()
    result = api.clean(run_id, all=all_, dry_run=dry_run)
    if as_json:
        emit_json(result)
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {len(result['deleted'])} resource(s) from the ledger and {len(result['adopted'])} found by the sweep"
              f"{'' if dry_run else '; nothing tagged with this ledger remains'}")


if __name__ == "__main__":
    main()
