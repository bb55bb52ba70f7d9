"""``bench history add/detect/list/show/report``: keep every run, find change points over them, draw the trends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from bench.cli.common import emit_json, json_option
from bench.console import log
from bench.errors import InputError, VerdictFailed

db_option = click.option(
    "--db",
    default=None,
    help="History database: a SQLite file path, sqlite:///PATH or postgresql://user@host/db. "
    "Default: $BENCH_HISTORY, else bench-history.sqlite in the working folder.",
)
series_option = click.option(
    "--series",
    "series",
    default=None,
    help="Only these series: variant=fp32,provider=cpu,batch=1,machine=…,perturbation=…,metric=… "
    "(globs allowed), or a glob over the series label.",
)
metric_option = click.option(
    "--metric",
    default="p50,floor",
    show_default=True,
    help="Metric(s), comma list: p50, floor (the fastest replicate's p50, from runs with ≥ 3 replicates: far "
    "steadier than p50 on a shared machine), p90, p95, p99, mean, throughput, rss, gpu, session, auc, or a stored "
    "name (latency_p50_ms, roc_auc, service_p99_ms, …); 'all' for every one.",
)
since_option = click.option(
    "--since",
    default=None,
    help="Only runs created at or after this: an ISO date/time (2026-11-01) or an age (30d, 12h).",
)


@click.group()
def history() -> None:
    """Keep every run (SQLite or PostgreSQL), find change points over them, draw the trends.

    \b
      bench history add reports/rc1 [--commit SHA] [--branch main] [--tag K=V]   store runs (idempotent)
      bench history detect --metric p50,floor --fail-on-change                    change points per series
      bench history list | show SERIES | report --out DIR                         look at what is stored
    """


def _open(db: str | None) -> Any:
    from bench.history.store import Store

    return Store.open(db)


@history.command("add")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@click.option("--commit", default=None, help="Commit the runs measured (default: git HEAD of the working folder).")
@click.option("--branch", default=None, help="Branch name (default: the working folder's git branch).")
@click.option("--tag", "tags", multiple=True, help="A K=V label stored with each run (repeatable).")
@json_option("what was stored")
def history_add(
    results: tuple[Path, ...],
    db: str | None,
    commit: str | None,
    branch: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Store runs: results.json files or folders holding one, bench compare / bench ab JSON (or an ab --out
    folder). A run already stored (same run id) is kept once."""
    from bench.history.ingest import git_head, read_record

    labels: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--tag {tag!r} is not K=V (e.g. --tag runner=ci-2)")
        labels[key.strip()] = value.strip()
    if commit is None or branch is None:
        head_commit, head_branch = git_head()
        commit = commit if commit is not None else head_commit
        branch = branch if branch is not None else head_branch
    outcome: list[dict[str, Any]] = []
    bad: list[str] = []
    with _open(db) as store:
        for path in results:
            try:
                record = read_record(path, commit=commit, branch=branch, tags=labels)
            except InputError as exc:  # bad input never loses the other runs
                bad.append(str(exc))
                log(f"error: {exc}")
                continue
            new = store.add(record)
            outcome.append({"path": str(path), "run_id": record.run.run_id, "added": new, "points": len(record.points)})
            log(
                f"added {record.run.run_id} ({len(record.points)} figures) from {path}"
                if new
                else f"kept {record.run.run_id}: already in the history"
            )
        where = store.where
    if as_json:
        emit_json(json.dumps({"db": where, "runs": outcome, "errors": bad}, indent=2))
    if bad:
        raise InputError(f"{len(bad)} of {len(results)} inputs could not be read (the others were stored in {where})")


def _since(text: str | None) -> str | None:
    if not text:
        return None
    units = {"d": "days", "h": "hours", "w": "weeks"}
    if text[:-1].isdigit() and text[-1] in units:
        then = datetime.now(timezone.utc) - timedelta(**{units[text[-1]]: int(text[:-1])})
        return then.isoformat(timespec="seconds")
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise InputError(f"--since {text!r}: write an ISO date (2026-11-01) or an age (30d, 12h, 2w)") from None


def _metrics(text: str) -> list[str] | None:
    from bench.history.detect import resolve_metric

    names = [m.strip() for m in text.split(",") if m.strip()]
    return None if not names or "all" in names else [resolve_metric(m) for m in names]


def _method(tolerance: str, p_value: float) -> Any:
    from bench.compare import parse_tolerance
    from bench.history.detect import Method

    if not 0 < p_value < 0.5:
        raise InputError(f"--p-value must be between 0 and 0.5, got {p_value}")
    return Method(tolerance=parse_tolerance(tolerance), p_value=p_value, permutations=max(999, round(10 / p_value) - 1))


def _check_series(spec: str | None) -> None:
    from bench.history.detect import matches

    try:
        matches(("", "", "", 0, "", ""), spec)
    except ValueError as exc:
        raise InputError(f"--series: {exc}") from None


@history.command("detect")
@db_option
@series_option
@metric_option
@since_option
@click.option(
    "--tolerance",
    default="10%",
    show_default=True,
    help="A change beyond this (interval included) is a regression / improvement.",
)
@click.option(
    "--p-value",
    "p_value",
    type=float,
    default=0.01,
    show_default=True,
    help="Significance of a change point, per window of runs (permutation test).",
)
@json_option('{"change_points": [...]}')
@click.option("--fail-on-change", is_flag=True, help="Exit 1 when any change is a regression.")
def history_detect(
    db: str | None,
    series: str | None,
    metric: str,
    since: str | None,
    tolerance: str,
    p_value: float,
    as_json: bool,
    fail_on_change: bool,
) -> None:
    """Change points per series (variant × provider × batch × metric × machine class): E-divisive with a
    permutation test, each with the ratio of the medians after/before, its interval and a verdict."""
    from bench.history.detect import detect

    _check_series(series)
    method = _method(tolerance, p_value)
    with _open(db) as store:
        points = store.points(_metrics(metric), _since(since))
    report = detect(points, method, series)
    if as_json:
        emit_json(json.dumps(report, indent=2))
    else:
        _print_changes(report)
    if fail_on_change and report["regressions"]:
        raise VerdictFailed(f"{report['regressions']} regression(s) in the history (see above)")


def _print_changes(report: dict[str, Any]) -> None:
    from bench.history.detect import series_label

    click.echo(f"{report['series']} series, {report['runs']} runs; {len(report['change_points'])} change point(s)")
    for c in report["change_points"]:
        s = c["series"]
        key = (s["machine_class"], s["variant"], s["provider"], s["batch_size"], s["perturbation"], s["metric"])
        lo, hi = c["ci"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "[no interval]"
        ratio = f"×{c['ratio']:.3f}" if c["ratio"] is not None else "×?"
        commits = " … ".join((x or "?")[:10] for x in c["commit_range"])
        click.echo(
            f"  {c['verdict']:<12} {series_label(key)}: {ratio} {ci} at run {c['run_id']} "
            f"(commits {commits}; {c['kind']}, p {c['p_value']:.4f}; "
            f"median {c['median_before']:.4g} → {c['median_after']:.4g})"
        )


@history.command("list")
@db_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N runs.")
@json_option("the runs")
def history_list(db: str | None, limit: int | None, as_json: bool) -> None:
    """Stored runs, newest first: run id, created, commit, branch, machine, source."""
    from dataclasses import asdict

    with _open(db) as store:
        runs = store.runs(limit)
        where = store.where
    if as_json:
        emit_json(json.dumps({"db": where, "runs": [asdict(r) for r in runs]}, indent=2))
        return
    click.echo(f"{len(runs)} run(s) in {where}")
    for r in runs:
        tags = " ".join(f"{k}={v}" for k, v in r.tags.items())
        click.echo(
            f"  {r.run_id}  {r.created}  {(r.commit or '-')[:10]:<10}  {r.branch or '-':<12} "
            f"{r.machine_id or '-'}  {r.source} {tags}".rstrip()
        )


@history.command("show")
@click.argument("series")
@db_option
@metric_option
@since_option
@json_option("the series' points and change points")
def history_show(series: str, db: str | None, metric: str, since: str | None, as_json: bool) -> None:
    """One or more series (SERIES as --series: variant=fp32,batch=1 or a label glob): every run's figure
    with its interval, and the change points."""
    from bench.history.detect import Method, detect, series_dict, series_label, series_of

    _check_series(series)
    with _open(db) as store:
        points = store.points(_metrics(metric), _since(since))
    from bench.history.detect import matches

    grouped = {k: v for k, v in series_of(points).items() if matches(k, series)}
    if not grouped:
        raise InputError(f"no stored series matches {series!r} (see `bench history list`, or try --metric all)")
    report = detect([p for v in grouped.values() for p in v], Method())
    if as_json:
        out = [
            {
                "series": series_dict(k),
                "points": [
                    {
                        "run_id": p.run_id,
                        "created": p.created,
                        "commit": p.commit,
                        "value": p.value,
                        "ci": [p.ci_low, p.ci_high],
                    }
                    for p in v
                ],
            }
            for k, v in grouped.items()
        ]
        emit_json(json.dumps({"series": out, "change_points": report["change_points"]}, indent=2))
        return
    for key, pts in grouped.items():
        click.echo(series_label(key))
        for p in pts:
            ci = f" [{p.ci_low:.4g}, {p.ci_high:.4g}]" if p.ci_low is not None and p.ci_high is not None else ""
            click.echo(
                f"  {p.run_id}  {p.created}  {(p.commit or '-')[:10]:<10}  {p.value:.4g}{ci} {p.unit or ''}".rstrip()
            )
    _print_changes(report)


@history.command("report")
@db_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for index.html and plots/*.png.")
@series_option
@metric_option
@since_option
@click.option("--no-png", is_flag=True, help="Only the HTML page (no matplotlib PNGs).")
def history_report(db: str | None, out: Path, series: str | None, metric: str, since: str | None, no_png: bool) -> None:
    """One self-contained HTML page (data and plots inline, English and Thai, filters) and a PNG per series:
    each trend with its interval band and change points marked with their commit range."""
    from bench.history.dashboard import write_dashboard
    from bench.history.detect import Method, detect, matches, series_of

    _check_series(series)
    with _open(db) as store:
        points = store.points(_metrics(metric), _since(since))
        where = store.where
    grouped = {k: v for k, v in series_of(points).items() if matches(k, series)}
    report = detect([p for v in grouped.values() for p in v], Method())
    page, pngs = write_dashboard(grouped, report, out, source=where, png=not no_png)
    log(f"wrote {page} ({page.stat().st_size / 1e6:.2f} MB) and {len(pngs)} PNG(s) in {out / 'plots'}")
