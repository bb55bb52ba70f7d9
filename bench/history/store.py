"""Where the history lives: one small ``Store`` over SQLite (one machine) or PostgreSQL (a team), same rows.

Both backends run the same SQL (``?`` placeholders, turned into ``%s`` for psycopg) in explicit
transactions: SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front (a second writer waits up to
``BUSY_TIMEOUT_S``, never fails half-way), PostgreSQL serialises schema migrations with an advisory lock.
Adding a run is idempotent by run id: ``INSERT … ON CONFLICT DO NOTHING`` on the run row, and its points
only when that row was new, in one transaction — two writers adding the same run keep one copy.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import InputError

DEFAULT_FILE = "bench-history.sqlite"
ENV_VAR = "BENCH_HISTORY"
BUSY_TIMEOUT_S = 60.0
_PG_LOCK = 0x62656E6368  # advisory lock key for migrations ("bench")
PSYCOPG_INSTALL = "pip install 'psycopg[binary]'"

# (version, statements): applied in order, each version once, recorded in history_schema. Add, never edit.
# {real} is the floating-point column type of the backend.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE history_runs (
                run_id TEXT PRIMARY KEY, created TEXT NOT NULL, added TEXT NOT NULL, commit_sha TEXT,
                branch TEXT, machine_id TEXT, source TEXT NOT NULL, path TEXT, tags TEXT NOT NULL)""",
            """CREATE TABLE history_points (
                run_id TEXT NOT NULL REFERENCES history_runs (run_id) ON DELETE CASCADE,
                machine_class TEXT NOT NULL, variant TEXT NOT NULL, provider TEXT NOT NULL,
                batch_size INTEGER NOT NULL, perturbation TEXT NOT NULL, metric TEXT NOT NULL,
                value {real}, ci_low {real}, ci_high {real}, unit TEXT, n INTEGER, replicates TEXT,
                PRIMARY KEY (run_id, machine_class, variant, provider, batch_size, perturbation, metric))""",
        ),
    ),
    (
        2,
        (
            "CREATE INDEX history_points_series ON history_points "
            "(metric, machine_class, variant, provider, batch_size)",
            "CREATE INDEX history_runs_created ON history_runs (created)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

# A derived series, read from the stored p50 rows' replicate summaries rather than stored itself (so every run
# ever added with replicates has it, no migration): the fastest replicate's p50. Slow spells of a shared host
# only ever add time, so the fastest of several replicates moves far less from run to run than their pooled
# p50 (Chen & Revels 2016, "Robust benchmarking in noisy environments", arXiv:1608.04295; timeit's advice
# to read the minimum) — while a change to the model's own compute moves every replicate, the fastest too.
# On the A/A matrices of the 2-core box: run-to-run sd of log p50 0.089, of the floor 0.039.
FLOOR_METRIC = "latency_floor_ms"
FLOOR_SOURCE = "latency_p50_ms"
FLOOR_MIN_REPLICATES = 3  # the fastest of fewer is not a floor, only one more p50


@dataclass(frozen=True)
class RunRow:
    """One stored run: where and when it was made, what code it measured."""

    run_id: str
    created: str
    commit: str | None = None
    branch: str | None = None
    machine_id: str | None = None
    source: str = "results"  # results | compare (a bench compare / bench ab JSON)
    path: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    added: str | None = None  # when it was stored (filled by the store)


@dataclass(frozen=True)
class PointRow:
    """One figure of one cell of one run, with its interval and replicate summary when it has them."""

    machine_class: str
    variant: str
    provider: str
    batch_size: int
    perturbation: str  # "" for timing/memory figures, "clean" or the perturbation for accuracy, "service"
    metric: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str | None = None
    n: int | None = None
    replicates: dict[str, Any] | None = None


@dataclass
class RunRecord:
    run: RunRow
    points: list[PointRow]


@dataclass(frozen=True)
class StoredPoint:
    """A point joined with its run, as detect and the dashboard read them."""

    run_id: str
    created: str
    commit: str | None
    branch: str | None
    machine_class: str
    variant: str
    provider: str
    batch_size: int
    perturbation: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    unit: str | None


def resolve_url(db: str | None) -> str:
    """``--db`` → ``$BENCH_HISTORY`` → ``bench-history.sqlite`` in the working folder."""
    return db or os.environ.get(ENV_VAR) or DEFAULT_FILE


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


class Store:
    """The history database. ``Store.open(url)`` connects and migrates; use as a context manager."""

    def __init__(self, conn: Any, kind: str, where: str):
        self._conn = conn
        self.kind = kind  # "sqlite" | "postgresql"
        self.where = where

    @classmethod
    def open(cls, db: str | None = None) -> Store:
        url = resolve_url(db)
        if url.startswith(("postgresql://", "postgres://")):
            store = cls(_connect_pg(url), "postgresql", redact(url))
        elif "://" in url and not url.startswith("sqlite:///"):
            raise InputError(
                f"--db {redact(url)}: unknown kind of database (a SQLite file path, sqlite:///PATH or postgresql://…)"
            )
        else:
            path = Path(url[len("sqlite:///") :] if url.startswith("sqlite:///") else url)
            store = cls(_connect_sqlite(path), "sqlite", str(path))
        store.migrate()
        return store

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # --- plumbing ------------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s").replace("{real}", "DOUBLE PRECISION") if self.kind == "postgresql" else sql

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._sql(sql), tuple(params))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, the lock taken at its start; rolled back on any error."""
        self._conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- schema --------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        row = self._execute("SELECT MAX(version) FROM history_schema").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, in one transaction; the versions applied."""
        applied: list[int] = []
        with self._write():
            if self.kind == "postgresql":
                self._execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
            self._execute(
                "CREATE TABLE IF NOT EXISTS history_schema (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)"
            )
            have = self.version
            if have > SCHEMA_VERSION:
                raise InputError(
                    f"history {self.where} has schema version {have}, newer than this bench knows ({SCHEMA_VERSION}): "
                    "upgrade bench"
                )
            for version, statements in MIGRATIONS:
                if version <= have:
                    continue
                for statement in statements:
                    self._execute(statement.replace("{real}", "REAL") if self.kind == "sqlite" else statement)
                self._execute("INSERT INTO history_schema (version, applied) VALUES (?, ?)", (version, _now()))
                applied.append(version)
        return applied

    # --- writing -------------------------------------------------------------------------------------
    def add(self, record: RunRecord) -> bool:
        """Store a run and its points; False (and nothing written) when its run id is already stored."""
        run = record.run
        with self._write():
            cursor = self._execute(
                "INSERT INTO history_runs (run_id, created, added, commit_sha, branch, machine_id, source, path, tags) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (
                    run.run_id,
                    run.created,
                    _now(),
                    run.commit,
                    run.branch,
                    run.machine_id,
                    run.source,
                    run.path,
                    json.dumps(run.tags, sort_keys=True),
                ),
            )
            if cursor.rowcount == 0:
                return False
            rows = [
                (
                    run.run_id,
                    p.machine_class,
                    p.variant,
                    p.provider,
                    p.batch_size,
                    p.perturbation,
                    p.metric,
                    p.value,
                    p.ci_low,
                    p.ci_high,
                    p.unit,
                    p.n,
                    json.dumps(p.replicates, sort_keys=True) if p.replicates else None,
                )
                for p in _unique(record.points)
            ]
            if rows:
                sql = self._sql(
                    "INSERT INTO history_points (run_id, machine_class, variant, provider, batch_size, perturbation, "
                    "metric, value, ci_low, ci_high, unit, n, replicates) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )
                if self.kind == "sqlite":
                    self._conn.executemany(sql, rows)
                else:
                    with self._conn.cursor() as cur:
                        cur.executemany(sql, rows)
        return True

    # --- reading -------------------------------------------------------------------------------------
    def runs(self, limit: int | None = None) -> list[RunRow]:
        """Stored runs, newest first."""
        sql = (
            "SELECT run_id, created, commit_sha, branch, machine_id, source, path, tags, added FROM history_runs "
            "ORDER BY created DESC, run_id DESC"
        )
        rows = self._execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [RunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7] or "{}"), r[8]) for r in rows]

    def count(self) -> tuple[int, int]:
        """(runs, points) stored."""
        runs = self._execute("SELECT COUNT(*) FROM history_runs").fetchone()[0]
        points = self._execute("SELECT COUNT(*) FROM history_points").fetchone()[0]
        return int(runs), int(points)

    def points(self, metrics: Sequence[str] | None = None, since: str | None = None) -> list[StoredPoint]:
        """Every point (of ``metrics``, of runs created at or after ``since``), oldest run first; the derived
        ``FLOOR_METRIC`` with them when asked for (or when ``metrics`` is None: every metric)."""
        floor = metrics is None or FLOOR_METRIC in metrics
        wanted = None if metrics is None else [m for m in metrics if m != FLOOR_METRIC]
        read = None if wanted is None else sorted({*wanted, *([FLOOR_SOURCE] if floor else [])})
        where: list[str] = []
        params: list[Any] = []
        if read is not None:
            where.append("p.metric IN (" + ", ".join("?" for _ in read) + ")")
            params.extend(read)
        if since:
            where.append("r.created >= ?")
            params.append(since)
        sql = (
            "SELECT r.run_id, r.created, r.commit_sha, r.branch, p.machine_class, p.variant, p.provider, "
            "p.batch_size, p.perturbation, p.metric, p.value, p.ci_low, p.ci_high, p.unit, "
            "CASE WHEN p.metric = ? THEN p.replicates END "
            "FROM history_points p JOIN history_runs r ON r.run_id = p.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.created, r.run_id"
        )
        out: list[StoredPoint] = []
        for row in self._execute(sql, [FLOOR_SOURCE, *params]).fetchall():
            point = StoredPoint(*row[:14])
            if wanted is None or point.metric in wanted:
                out.append(point)
            if floor and row[14]:
                fastest = fastest_replicate(json.loads(row[14]))
                if fastest is not None:
                    out.append(replace(point, metric=FLOOR_METRIC, value=fastest, ci_low=None, ci_high=None))
        return out


def fastest_replicate(replicates: dict[str, Any]) -> float | None:
    """The smallest per-replicate p50 of a stored replicate summary, None with fewer than
    ``FLOOR_MIN_REPLICATES`` of them."""
    p50s = [float(v) for v in replicates.get("p50_ms") or [] if isinstance(v, (int, float))]
    return min(p50s) if len(p50s) >= FLOOR_MIN_REPLICATES else None


def _unique(points: Sequence[PointRow]) -> list[PointRow]:
    """One point per key (the first): a run listing a cell twice must not abort its own insert."""
    seen: dict[tuple[Any, ...], PointRow] = {}
    for p in points:
        seen.setdefault((p.machine_class, p.variant, p.provider, p.batch_size, p.perturbation, p.metric), p)
    return list(seen.values())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    try:
        if path.parent and not path.parent.exists():
            raise InputError(f"--db {path}: folder {path.parent} does not exist (create it, or choose another path)")
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # readers never block the writer; another process switching it at the same moment: the journal stays correct
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode = WAL")
        return conn
    except sqlite3.DatabaseError as exc:
        raise InputError(f"--db {path}: not a usable SQLite database ({exc})") from exc


def _connect_pg(url: str) -> Any:
    try:  # optional (bench[postgres]): looked up by name, so a SQLite-only install never needs it
        psycopg = importlib.import_module("psycopg")
    except ImportError as exc:
        raise InputError(f"--db {redact(url)} needs the PostgreSQL driver: {PSYCOPG_INSTALL}") from exc
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--db {redact(url)}: cannot connect ({first})") from exc


__all__ = [
    "DEFAULT_FILE",
    "ENV_VAR",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PointRow",
    "RunRecord",
    "RunRow",
    "Store",
    "StoredPoint",
    "redact",
    "resolve_url",
]
