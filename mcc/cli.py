"""The `mcc` command: parse, call the library, render. Nothing else lives here."""
from __future__ import annotations

import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.text import Text

from mcc import api
from mcc.report.display import (
    ProgressView, error_line, events_table, labelled, redact, resources_table, runs_table, summary_view,
)
from mcc.errors import EXIT_COMPLETED_WITH_FAILURES, CleanIncomplete, MccError

# Markup and emoji codes off: every message is printed exactly as written (a `[aws]` or a quoted
# `return [p for p in ...]` would otherwise vanish, `:100:` become an emoji); styles go through Text.
out = Console(markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)


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
            err.print(labelled("error:", "bold red", str(exc)), highlight=False, soft_wrap=True)
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
            err.print(labelled("internal error:", "bold red", f"{type(exc).__name__}: {exc}\n"
                               "Re-run with --debug for the traceback and report it. The ledger is intact."),
                      highlight=False, soft_wrap=True)
            ctx.exit(70)


@click.group(cls=McGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="materialsCloudCompute")
def main(debug: bool) -> None:
    """mcc — run a sweep of independent subproblems locally or on AWS, get one HDF5 file back.

    The ledger lives in $MCC_HOME (default ~/.mcc).
    """


REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def _region_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not REGION_NAME.match(value):
        raise click.BadParameter(f"{value!r} is not an AWS region name, e.g. us-east-1 or eu-west-1")
    return value


def aws_options(f: Callable) -> Callable:
    """--profile and --region, as every AWS tool has them."""
    f = click.option("--region", callback=_region_name,
                     help="AWS region (default: the standard chain, e.g. AWS_REGION).")(f)
    return click.option("--profile", help="AWS profile (SSO profiles work).")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(f)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a project with points.py, entry.py, combine_data.py and mcc.toml (commented).

    Example: mcc init mysweep && mcc run mysweep
    """
    from mcc.project.scaffold import init_project

    for path in init_project(directory):
        out.print(f"created {path}")
    out.print(f"next: edit {directory}/points.py and entry.py (and combine_data.py, or delete it to use the "
              f"built-in combiner), then `mcc run {directory}`", highlight=False)


def _follow(as_json: bool, call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    if as_json or not out.is_terminal:
        result = call(**kwargs)
    else:
        with ProgressView(out) as view:
            result = call(on_progress=view.update, **kwargs)
    return result


FIRST_ERRORS = 5  # errors a run with failures prints under its summary


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        out.print(summary_view(result))
    if result["state"] == "completed_with_failures":
        if not as_json:
            err.print(failures_note(result), highlight=False, soft_wrap=True)
        sys.exit(EXIT_COMPLETED_WITH_FAILURES)
    if result["state"] == "failed":
        sys.exit(1)


def failures_note(result: dict[str, Any]) -> Text:
    """The first few errors (point, message), where to see them all and how to recompute only them."""
    run_id, failures = result["run_id"], result.get("failures") or []
    note = labelled("warning:", "bold yellow", f"{result['dead']} of {result['points']} points have no result "
                    f"({len(failures)} subproblem(s) failed every attempt); the combined file lists them in its "
                    "`missing` dataset.")
    for f in failures[:FIRST_ERRORS]:
        note.append(f"\n  {error_line(f.get('error')) or '(no error recorded)'}")
    if len(failures) > FIRST_ERRORS:
        note.append(f"\n  … and {len(failures) - FIRST_ERRORS} more")
    note.append(f"\nAll of them: `mcc status {run_id}`. After fixing the entry, recompute only them: "
                f"`mcc resume {run_id} --retry-dead`.")
    return note


@main.command()
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["local", "aws", "slurm"]), help="Where to run (default: local).")
@click.option("--workers", type=int, help="Number of workers.")
@click.option("--chunk-size", type=int, help="Points per subproblem (default: ~2 s of work).")
@click.option("--max-attempts", type=int, help="Attempts per point before it is dead.")
@click.option("--entry", help='"module:function" or "script.py".')
@click.option("--point-timeout", type=float, help="Seconds allowed per point (default: no limit).")
@click.option("--detach", is_flag=True, help="Return once the run is launched; follow with `mcc resume`.")
@click.option("--keep", is_flag=True,
              help="Keep the queue, the processes and the bucket's copy of the result after the run.")
@aws_options
@click.option("--worker-type", help="EC2 instance type of the workers (aws).")
@click.option("--spot/--on-demand", default=None, help="Workers on spot instances (aws).")
@click.option("--budget", type=float, help="The most the run may cost, USD (aws; the manager enforces it).")
@click.option("--estimate", is_flag=True,
              help="Only predict wall time, instance-hours and cost per candidate instance type; create nothing.")
@json_option
def run(directory: Path, as_json: bool, profile: str | None, region: str | None, worker_type: str | None,
        spot: bool | None, budget: float | None, estimate: bool, **options: Any) -> None:
    """Run the sweep in DIRECTORY (default: the current one).

    With --estimate, time the entry on a few points spread over the sweep and print what the run would
    take and cost on each candidate type (`worker_types` of [aws]); nothing is created.

    \b
    Exit status: 0 every point has its result; 4 the run finished with dead points
    (completed_with_failures: the combined file lists them; `mcc resume RUN --retry-dead`
    recomputes only them); 1 the run failed; 2 bad input (nothing was created).

    Example: mcc run examples/kpoints --workers 4
    """
    def created(run_row: Any) -> None:
        from mcc.driver.prepare import oversubscription

        if not as_json:
            err.print(Text.assemble("run ", (run_row.id, "bold"), f": {run_row.points} points"), highlight=False)
        warning = oversubscription(run_row.backend, run_row.settings["workers"])
        if warning:
            err.print(labelled("warning:", "bold yellow", warning), highlight=False, soft_wrap=True)

    aws = {"profile": profile, "region": region, "worker_type": worker_type, "spot": spot, "budget_usd": budget}
    if estimate:
        from mcc.report.display import estimate_view

        keys = ("backend", "workers", "chunk_size", "entry", "point_timeout")
        doc = api.estimate(project_dir=directory, aws=aws, **{k: options[k] for k in keys})
        if as_json:
            emit_json(doc)
        else:
            out.print(estimate_view(doc))
        return
    result = _follow(as_json, api.run, project_dir=directory, on_created=created, aws=aws, **options)
    _report(result, as_json)


@main.command()
@click.argument("run_id")
@click.option("--detach", is_flag=True, help="Relaunch what is needed, then return.")
@click.option("--keep", is_flag=True, help="Keep the queue and processes after the run.")
@click.option("--retry-dead", is_flag=True,
              help="Recompute only the dead points of a run that finished with failures (after fixing the entry); "
                   "the combined file is rebuilt with every point once.")
@click.option("--budget", type=float, help="A new cap, USD: continues a run stopped by its budget.")
@json_option
def resume(run_id: str, detach: bool, keep: bool, retry_dead: bool, budget: float | None, as_json: bool) -> None:
    """Resume RUN_ID from its current state and drive it to the end.

    Exit status as for `mcc run` (0 complete, 4 finished with dead points, 1 failed).

    Example: mcc resume r-20261126-1a2b3c --retry-dead
    """
    result = _follow(as_json, api.resume, run_id=run_id, detach=detach, keep=keep, retry_dead=retry_dead,
                     budget=budget)
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


@ledger.command("recover")
@json_option
def ledger_recover(as_json: bool) -> None:
    """Replace a damaged ledger by its last good backup and adopt, by their tags, what was created since.

    The damaged file is kept beside the ledger; `mcc clean` then removes everything, adopted or not.

    Example: mcc ledger recover && mcc clean --all --yes
    """
    doc = api.ledger_recover()
    if as_json:
        emit_json(doc)
        return
    source = f"restored from {doc['backup']}" if doc["backup"] else "started afresh (there was no backup)"
    out.print(f"ledger {doc['ledger']} {source}; the damaged file is kept as {doc['damaged_copy']}. "
              f"{len(doc['adopted'])} resource(s) created since were found by their tags and adopted.",
              highlight=False, soft_wrap=True)
    if doc["adopted"]:
        out.print(resources_table([{**r, "run": r.get("run_id")} for r in doc["adopted"]]))


@main.command()
@click.option("--backend", type=click.Choice(["aws"]), default="aws", show_default=True)
@aws_options
@click.option("--ssh-cidr", help="Open SSH to this CIDR only (creates a key pair); closed by default.")
@json_option
def provision(backend: str, profile: str | None, region: str | None, ssh_cidr: str | None, as_json: bool) -> None:
    """Create the resources every run in a region shares (bucket, security group[, key pair][, baked AMI]).

    Reads the [aws] table of ./mcc.toml when there is one: with custom_image = true it bakes an AMI with
    mcc and the table's requirements installed (once per mcc version and requirement list).

    Example: mcc provision --backend aws --region us-east-1
    """
    aws = {k: v for k, v in {"profile": profile, "region": region, "ssh_cidr": ssh_cidr}.items() if v}
    rows = api.provision(backend=backend, aws=aws)
    if as_json:
        emit_json(rows)
    else:
        out.print(resources_table(rows))




def _region_list(regions: str | None) -> list[str] | None:
    """``--regions`` as a list: ``all`` or comma-separated region names such as us-east-1."""
    if not regions:
        return None
    names = [r.strip() for r in regions.split(",") if r.strip()]
    bad = [r for r in names if r != "all" and not REGION_NAME.match(r)]
    if bad or ("all" in names and len(names) > 1):
        raise click.BadParameter(f"{', '.join(bad) or regions!r} is not a region list: give `all` or region "
                                 "names separated by commas, e.g. us-east-1,eu-west-1", param_hint="--regions")
    return names


@main.command()
@click.option("--run", "run_id", help="Clean only this run.")
@click.option("--all", "all_", is_flag=True, help="Clean every run and resource of this ledger.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--regions", help="Also sweep these AWS regions (comma-separated, or `all`).")
@click.option("--ledger-id", help="Find what a lost ledger created, by its uuid tag, and remove it.")
@json_option
def clean(run_id: str | None, all_: bool, dry_run: bool, yes: bool, regions: str | None, ledger_id: str | None,
          as_json: bool) -> None:
    """Delete the resources of one run or of every run, then verify nothing tagged remains.

    Example: mcc clean --all --yes
    """
    if bool(run_id) == all_:
        raise click.UsageError("give exactly one of --run RUN or --all")
    extra = {"regions": _region_list(regions), "ledger_id": ledger_id}
    if not dry_run and not yes and sys.stdin.isatty():
        preview = api.clean(run_id, all=all_, dry_run=True, **extra)
        out.print(f"{len(preview['deleted'])} resource(s) in the ledger, {len(preview['adopted'])} found by the sweep"
                  + (f", {len(preview['refused'])} refused (older than the ledger: not deleted)"
                     if preview["refused"] else ""))
        if not click.confirm("delete them?", default=False):
            raise click.Abort()
    try:
        result = api.clean(run_id, all=all_, dry_run=dry_run, **extra)
    except CleanIncomplete as exc:  # the report (with the survivors) on stdout, the message on stderr
        if as_json and exc.report is not None:
            emit_json(exc.report.to_dict())
        raise
    if as_json:
        emit_json(result)
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {len(result['deleted'])} resource(s) from the ledger and {len(result['adopted'])} found by the sweep"
              f"{'' if dry_run else '; nothing tagged with this ledger remains'}")



# -- what it cost and how it went: analyze, prices, logs, doctor ------------------------------------------

@main.command()
@click.argument("run_ids", nargs=-1, metavar="[RUN]...")
@click.option("--tsv", is_flag=True, help="Tab-separated rows (the original mCC's summary.txt columns, plus ours).")
@click.option("--by-type", is_flag=True, help="Aggregate the runs by instance type (the original's analysis.txt).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw RUN into this PNG: worker timeline, utilisation, cost (needs matplotlib).")
@json_option
def analyze(run_ids: tuple[str, ...], tsv: bool, by_type: bool, plot_path: Path | None, as_json: bool) -> None:
    """What runs cost and how they went, from the ledger (no RUN = every run).

    Wall time, instance-seconds, vCPUs, cost, cost per point, points/s, retries, preemptions, stalls and
    dead points.

    \b
    Cost rule, from the AWS EC2 pricing page (https://aws.amazon.com/ec2/pricing/on-demand/):
    Linux On-Demand and Spot instances have "per-second billing, 60-second minimum", per
    instance-run. The original mCC assumed a 1-hour minimum. ElastiCache bills node-hours.
    Prices: the price an instance recorded, else `mcc prices`. Local processes cost $0 but
    count their instance-seconds.

    Example: mcc analyze r-20261126-1a2b3c --plot run.png
    """
    from mcc.report import analysis
    from mcc.report.display import analysis_table, analysis_view, by_type_table
    from mcc.ledger import queries
    from mcc.ledger.db import open_for_reading

    if as_json and tsv:
        raise click.UsageError("give at most one of --json and --tsv")
    if plot_path and len(run_ids) != 1:
        raise click.UsageError("--plot draws one run: give exactly one RUN")
    open_for_reading()
    ids = [queries.get_run(r).id for r in run_ids] or [r.id for r in queries.list_runs()]
    if by_type:
        rows = analysis.analyze_by_type(ids)
        if as_json:
            emit_json(rows)
        elif tsv:
            click.echo(analysis.to_tsv(rows, analysis.BY_TYPE_COLUMNS), nl=False)
        else:
            out.print(by_type_table(rows))
    else:
        docs = [analysis.analyze_run(r) for r in ids]
        if as_json:
            emit_json(docs[0] if len(run_ids) == 1 else docs)
        elif tsv:
            click.echo(analysis.to_tsv([analysis.summary_row(d) for d in docs], analysis.SUMMARY_COLUMNS), nl=False)
        elif len(run_ids) == 1:
            out.print(analysis_view(docs[0]))
        else:
            out.print(analysis_table([analysis.summary_row(d) for d in docs]))
            out.print()
            out.print(by_type_table(analysis.analyze_by_type(ids)))
    if plot_path:
        from mcc.report.plots import plot_run

        plot_run(ids[0], plot_path)
        err.print(f"wrote {plot_path}", highlight=False)


@main.command()
@click.option("--refresh", is_flag=True,
              help="Fetch current prices from the AWS Price List API into the ledger (needs AWS credentials).")
@click.option("--region", callback=_region_name, help="Only this region (with --refresh: fetch only this region).")
@json_option
def prices(refresh: bool, region: str | None, as_json: bool) -> None:
    """EC2 On-Demand Linux prices ($/hour) and vCPUs per instance type, as `mcc analyze` uses them.

    The table shipped with mcc carries its date and source; --refresh lays the Price List API's current
    prices over it. Billing: per second with a 60-second minimum per instance-run.

    Example: mcc prices --region eu-west-1
    """
    from mcc.report import pricing
    from mcc.report.display import prices_table
    from mcc.ledger import open_ledger

    if refresh:  # a plain read opens no ledger: on a fresh machine it creates nothing
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = boto3.client("pricing", region_name="us-east-1")
            pricing.refresh_prices(open_ledger(), client, regions=[region] if region else None)
        except (BotoCoreError, ClientError) as exc:
            raise MccError(f"could not fetch prices from the AWS Price List API: {exc}. It needs AWS credentials "
                           "with pricing:GetProducts (`mcc doctor` checks them); the shipped table still works.") from exc
    table = pricing.load_table()
    rows = pricing.table_rows(region)
    if as_json:
        emit_json({"date": table["date"], "source": table["source"], "refreshed": table["refreshed"], "prices": rows})
        return
    title = f"EC2 On-Demand Linux, USD per hour (table of {table['date']}"
    title += f"; refreshed {table['refreshed']['date']})" if table["refreshed"] else ")"
    out.print(prices_table(rows, title))
    out.print(f"source: {table['source']}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("run_id")
@click.option("--worker", help="Only this source: a worker id (w-0003), manager or redis.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
def logs(run_id: str, worker: str | None, follow: bool) -> None:
    """The run's logs (manager, workers, queue server) merged by time, each line prefixed by its source.

    Read from the bucket while the run is live, from results/RUN/logs/ once it is finished.

    Example: mcc logs r-20261126-1a2b3c --worker w-0001
    """
    from mcc.report import logs as run_logs

    lines = run_logs.follow(run_id, worker) if follow else run_logs.merged_lines(run_id, worker)
    try:
        for line in lines:
            click.echo(line)
    except BrokenPipeError:  # `mcc logs RUN | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@main.command()
@click.option("--no-aws", is_flag=True, help="Skip the AWS checks.")
@json_option
def doctor(no_aws: bool, as_json: bool) -> None:
    """Check this machine: Python, packages, redis-server, the ledger, AWS identity, region, vCPU quota,
    the roles' permissions boundary.

    Every problem comes with its fix. Exits 0 when the local essentials pass; AWS problems are reported
    but do not fail the command (the local backend needs no AWS account).

    Example: mcc doctor --json
    """
    from mcc.report.display import doctor_view
    from mcc.report.doctor import run_checks

    report = run_checks(aws=not no_aws)
    if as_json:
        emit_json(report)
    else:
        out.print(doctor_view(report))
    if not report["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
