"""The history store on SQLite and on a real PostgreSQL server: migrations, idempotent add, two writers at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from history_helpers import make_run, write_runs

from bench.errors import InputError
from bench.history.ingest import read_record
from bench.history.store import FLOOR_METRIC, MIGRATIONS, SCHEMA_VERSION, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli import BENCH, bench_env, run_bench


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return str(tmp_path / "h.sqlite") if kind == "sqlite" else request.getfixturevalue("pg_db")


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_add_is_idempotent_and_keeps_every_figure(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)
    run = make_run("r1", "2026-11-01T00:00:00+00:00")
    run.write(tmp_path / "r1")
    record = read_record(tmp_path / "r1", commit="abc123", branch="main", tags={"runner": "ci"})
    with Store.open(url) as store:
        assert store.kind == kind
        assert store.version == SCHEMA_VERSION
        assert store.add(record) is True
        assert store.add(record) is False  # same run id: kept once
        runs, points = store.count()
        assert (runs, points) == (1, len(record.points))
        [row] = store.runs()
        assert (row.run_id, row.commit, row.branch, row.tags, row.machine_id) == (
            "r1",
            "abc123",
            "main",
            {"runner": "ci"},
            "m-test",
        )
        p50 = [p for p in store.points(["latency_p50_ms"]) if p.variant == "fp32"]
        assert len(p50) == 1 and p50[0].ci_low is not None and p50[0].ci_low < p50[0].value < p50[0].ci_high
        assert p50[0].machine_class == "CPU Test CPU"
    metrics = {p.metric for p in record.points}
    assert {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_ips", "rss_peak_mb"} <= metrics


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_the_floor_series_is_the_fastest_replicate_read_from_stored_p50_rows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Not stored, derived when read: every stored run with ≥ 3 replicates has it; fewer give no floor."""
    url = _url(kind, tmp_path, request)
    run = make_run("r1", "2026-11-01T00:00:00+00:00")
    thin = make_run("r2", "2026-11-02T00:00:00+00:00")
    for cell in thin.cells:
        assert cell.replicates is not None
        cell.replicates["p50_ms"] = cell.replicates["p50_ms"][:2]
    with Store.open(url) as store:
        for r in (run, thin):
            r.write(tmp_path / r.run_id)
            store.add(read_record(tmp_path / r.run_id))
        floor = store.points([FLOOR_METRIC])
        assert {p.metric for p in floor} == {FLOOR_METRIC}  # the p50 rows it came from are not returned
        assert [(p.run_id, p.variant) for p in floor] == [("r1", "fp32"), ("r1", "int8")]
        for point, cell in zip(floor, run.cells, strict=True):
            assert cell.replicates is not None
            assert point.value == min(cell.replicates["p50_ms"]) < cell.latency_ms["p50"] * 1.05
            assert point.unit == "ms" and point.ci_low is None
        both = store.points(["latency_p50_ms", FLOOR_METRIC])
        assert sum(p.metric == "latency_p50_ms" for p in both) == 4 and sum(p.metric == FLOOR_METRIC for p in both) == 2
        everything = store.points()
        assert sum(p.metric == FLOOR_METRIC for p in everything) == 2
        assert not [p for p in store.points(["latency_p95_ms"]) if p.metric != "latency_p95_ms"]


def test_sqlite_migrates_an_old_schema_and_refuses_a_newer_one(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE history_schema (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    for statement in MIGRATIONS[0][1]:
        conn.execute(statement.replace("{real}", "REAL"))
    conn.execute("INSERT INTO history_schema VALUES (1, 'then')")
    conn.commit()
    conn.close()
    with Store.open(str(db)) as store:
        assert store.version == SCHEMA_VERSION > 1
    indexes = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "history_points_series" in indexes
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO history_schema VALUES (99, 'future')")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="newer than this bench"):
        Store.open(f"sqlite:///{db}")


def test_bad_urls_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown kind of database"):
        Store.open("mysql://x@y/z")
    with pytest.raises(InputError, match="does not exist"):
        Store.open(str(tmp_path / "no" / "such" / "h.sqlite"))
    (tmp_path / "junk.sqlite").write_text("not a database at all " * 100)
    with pytest.raises(InputError, match="SQLite"):
        Store.open(str(tmp_path / "junk.sqlite"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_writers_at_once_keep_one_copy_of_each_run(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two `bench history add` processes started together on overlapping runs (one fresh database, so both
    also race to migrate it): every run once, every figure once."""
    url = _url(kind, tmp_path, request)
    paths = write_runs(tmp_path / "runs", [2.0] * 12)
    first, second = [str(p) for p in paths[:8]], [str(p) for p in paths[4:]]
    procs = [
        subprocess.Popen(
            [*BENCH, "history", "add", *files, "--db", url, "--commit", "c1", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=bench_env(),
        )
        for files in (first, second[::-1])
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    added = [r for o in outs for r in json.loads(o[0])["runs"] if r["added"]]
    assert sorted(r["run_id"] for r in added) == [f"r{i:04d}" for i in range(12)]  # each added by exactly one
    with Store.open(url) as store:
        runs, points = store.count()
        assert runs == 12
        assert points == 12 * len(read_record(paths[0]).points)


def test_cli_add_reads_compare_and_ab_output_and_keeps_good_inputs(tmp_path: Path) -> None:
    """A compare JSON stands for its current side (read in full while that file exists, else from its rows);
    an unreadable input is exit 2 and the others are still stored."""
    base, cur = (
        make_run("base", "2026-11-01T00:00:00+00:00"),
        make_run("cur", "2026-11-02T00:00:00+00:00", p50=2.2, seed=3),
    )
    base.write(tmp_path / "base")
    cur.write(tmp_path / "cur")
    proc = run_bench("compare", str(tmp_path / "base"), str(tmp_path / "cur"), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    (tmp_path / "compare.json").write_text(proc.stdout)
    rows_only = json.loads(proc.stdout)
    rows_only["current"].update(path=None, run_id="cur-rows")
    (tmp_path / "rows.json").write_text(json.dumps(rows_only))
    (tmp_path / "bad.json").write_text("{not json")
    db = tmp_path / "h.sqlite"
    proc = run_bench(
        "history",
        "add",
        str(tmp_path / "compare.json"),
        str(tmp_path / "bad.json"),
        str(tmp_path / "rows.json"),
        "--db",
        str(db),
        "--json",
    )
    assert proc.returncode == 2, proc.stderr
    assert "bad.json" in proc.stderr and "could not be read" in proc.stderr
    out = json.loads(proc.stdout)
    assert [(r["run_id"], r["added"]) for r in out["runs"]] == [("cur", True), ("cur-rows", True)]
    with Store.open(str(db)) as store:
        sources = {r.run_id: r.source for r in store.runs()}
        assert sources == {"cur": "compare", "cur-rows": "compare"}
        full = [p for p in store.points(["latency_p50_ms"]) if p.run_id == "cur"]
        assert full and all(p.ci_low is not None for p in full)  # read from the results file itself
        rows = [p for p in store.points() if p.run_id == "cur-rows"]
        assert rows and {p.machine_class for p in rows} == {"unknown"}


def test_accuracy_and_service_figures_become_points() -> None:
    from bench.history.ingest import run_points

    run = make_run("acc", "2026-11-01T00:00:00+00:00", variants=("fp32",))
    run.cells[0].accuracy = {
        "n": 300,
        "accuracy": 0.9,
        "roc_auc": 0.95,
        "perturbations": [{"perturbation": "jpeg:70", "accuracy": 0.8}],
    }
    run.service = [
        {"variant": "fp32", "provider": "cpu", "status": "ok", "inprocess_p50_ms": 2.0,
         "load": {"latency_ms": {"p50": 3.0, "p99": 9.0}, "throughput_rps": 120.0}},
        {"variant": "int8", "provider": "cpu", "status": "failed", "reason": "x"},
    ]  # fmt: skip
    got = {(p.perturbation, p.metric): p.value for p in run_points(run) if p.metric not in ("latency_mean_ms",)}
    assert (
        got[("clean", "accuracy")] == 0.9 and got[("clean", "roc_auc")] == 0.95 and got[("jpeg:70", "accuracy")] == 0.8
    )
    assert got[("service", "service_p50_ms")] == 3.0 and got[("service", "service_p99_ms")] == 9.0
    assert got[("service", "service_throughput_rps")] == 120.0 and got[("service", "service_inprocess_p50_ms")] == 2.0
    assert all(p.variant == "fp32" for p in run_points(run) if p.perturbation == "service")


def test_add_takes_the_commit_and_branch_from_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "feature-x"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    make_run("g1", "2026-11-01T00:00:00+00:00").write(tmp_path / "g1")
    proc = run_bench("history", "add", str(tmp_path / "g1"), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    with Store.open(str(repo / "bench-history.sqlite")) as store:  # the default database, in the working folder
        [run] = store.runs()
    assert (run.commit, run.branch) == (head, "feature-x")
