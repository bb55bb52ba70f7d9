"""The results contract (ARCHITECTURE.md): dataclasses with a stable, versioned JSON form, and CSV.

Field names are an interface users' CI scripts read: add fields, never rename; bump
``SCHEMA_VERSION`` on a break. Fields a run could not measure are None with a reason beside them.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import InputError

SCHEMA_VERSION = 1
STATUSES = ("ok", "unavailable", "failed")


@dataclass
class ModelInfo:
    file: str
    size_mb: float
    sha256: str
    recipe: dict[str, Any] | None = None


@dataclass
class CellResult:
    """One variant × provider × batch size."""

    variant: str
    provider: str
    batch_size: int
    status: str = "ok"
    reason: str | None = None
    providers_effective: list[str] = field(default_factory=list)
    io_binding: bool | None = None
    model: ModelInfo | None = None
    session_create_ms: float | None = None
    latency_ms: dict[str, float] | None = None
    samples_ms: list[float] = field(default_factory=list)
    throughput_ips: float | None = None
    memory: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.provider, self.batch_size)

    @classmethod
    def not_run(cls, variant: str, provider: str, batch_size: int, status: str, reason: str) -> CellResult:
        """A cell that could not run is a result, not a crash."""
        return cls(variant=variant, provider=provider, batch_size=batch_size, status=status, reason=reason)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if isinstance(data.get("model"), dict):
            model_fields = {f.name for f in fields(ModelInfo)}
            data["model"] = ModelInfo(**{k: v for k, v in data["model"].items() if k in model_fields})
        return cls(**data)


@dataclass
class RunResult:
    """One bench invocation: environment, resolved config, dataset, cells and (optionally) service figures."""

    environment: dict[str, Any]
    config: dict[str, Any]
    cells: list[CellResult] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    service: list[dict[str, Any]] | None = None
    schema_version: int = SCHEMA_VERSION
    run_id: str = field(default_factory=lambda: new_run_id())
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        order = ["schema_version", "run_id", "created", "environment", "config", "dataset", "cells", "service"]
        return {k: data[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"results schema_version {version!r} is not supported (this bench reads {SCHEMA_VERSION})")
        return cls(
            environment=data.get("environment") or {},
            config=data.get("config") or {},
            cells=[CellResult.from_dict(c) for c in data.get("cells") or []],
            dataset=data.get("dataset"),
            service=data.get("service"),
            schema_version=version,
            run_id=data.get("run_id", ""),
            created=data.get("created", ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read results.json (or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"results file {path} not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not a results JSON file ({exc})") from exc
        if not isinstance(data, dict) or "cells" not in data:
            raise InputError(f"{path} is not a bench results file (no 'cells')")
        return cls.from_dict(data)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write results.json and results.csv atomically into ``out_dir``."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
        json_path, csv_path = out / "results.json", out / "results.csv"
        atomic_write_text(json_path, self.to_json() + "\n")
        atomic_write_text(csv_path, cells_frame(self.cells).to_csv(index=False))
        return json_path, csv_path


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus a short random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def cells_frame(cells: list[CellResult]) -> Any:
    """Cells flattened to one row each (nested dicts → dotted columns; raw samples and predictions left out)."""
    import pandas as pd

    rows = []
    for cell in cells:
        data = asdict(cell)
        data.pop("samples_ms", None)
        accuracy = data.get("accuracy")
        if isinstance(accuracy, dict):
            accuracy = {k: v for k, v in accuracy.items() if k not in ("predictions", "skipped")}
            data["accuracy"] = accuracy
        data["providers_effective"] = ",".join(data.get("providers_effective") or [])
        rows.append(data)
    frame = pd.json_normalize(rows, sep=".")
    return frame


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass
class LoadResult:
    """One load run (ARCHITECTURE.md, LoadResult); extras after ``server``. Latencies are of 2xx answers."""

    url: str
    endpoint: str
    mode: str
    arrival: str | None
    target_rate: float | None
    achieved_rate: float | None
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    latency_ms: dict[str, Any]
    send_lag_ms: dict[str, Any]
    generator_ceiling_rps: float | None
    server: dict[str, Any]
    concurrency: int | None = None
    throughput_rps: float | None = None     # 2xx answers per second of wall time (drain included)
    wall_s: float | None = None             # first send to last answer (or drain deadline)
    max_in_flight: int = 0
    files_per_request: int | None = None
    error_examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    max_rate: dict[str, Any] | None = None  # --find-max: {slo_p99_ms, rate_rps, limited_by, steps}
    samples_ms: list[float] = field(default_factory=list)  # raw latencies of 2xx answers, in send order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)
