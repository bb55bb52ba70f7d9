from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def peak_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own peak cache: nothing read from or written to the user's ~/.cache/bench."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
