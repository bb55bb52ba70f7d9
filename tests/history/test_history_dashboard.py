"""`bench history list/show/report`, and the dashboard in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from history_helpers import write_runs

from bench.history.dashboard import STRINGS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli import run_bench

CHROMIUM = "chromium"


def _chromium() -> str:
    exe = shutil.which(CHROMIUM) or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless browser not found: install the Debian package `chromium` (the dashboard is tested in it)")
    return exe


def _load(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console errors chromium logged while loading it."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "ERROR" in line or "Uncaught" in line or "Error" in line]
    return proc.stdout, errors


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hist")
    paths = write_runs(tmp / "runs", [2.0] * 12 + [2.6] * 12)
    db = tmp / "h.sqlite"
    proc = run_bench(
        "history", "add", *map(str, paths), "--db", str(db), "--commit", "0123456789abcdef", "--branch", "main"
    )
    assert proc.returncode == 0, proc.stderr
    return db


def test_list_and_show(history_db: Path, tmp_path: Path) -> None:
    proc = run_bench("history", "list", "--json", env={"BENCH_HISTORY": str(history_db)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert [r["run_id"] for r in runs] == [f"r{i:04d}" for i in range(23, -1, -1)]  # newest first
    assert runs[0]["commit"] == "0123456789abcdef" and runs[0]["branch"] == "main"
    proc = run_bench("history", "show", "variant=int8", "--db", str(history_db))
    assert proc.returncode == 0, proc.stderr
    assert "int8 · cpu · batch 1" in proc.stdout and "r0012" in proc.stdout and "regression" in proc.stdout
    proc = run_bench("history", "show", "variant=nope", "--db", str(history_db))
    assert proc.returncode == 2 and "no stored series" in proc.stderr


def test_strings_in_both_languages() -> None:
    assert set(STRINGS["en"]) == set(STRINGS["th"])
    assert all(STRINGS["th"][k] != STRINGS["en"][k] for k in ("title", "regression", "variant"))


@pytest.mark.slow
def test_report_page_renders_every_plot_without_console_errors(history_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_bench("history", "report", "--db", str(history_db), "--out", str(out), "--metric", "p50,throughput")
    assert proc.returncode == 0, proc.stderr
    page = out / "index.html"
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", html) and "<link" not in html  # nothing fetched
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    dom, errors = _load(page, tmp_path)
    assert errors == []
    assert 'data-rendered="4"' in dom and 'data-series="4"' in dom  # 2 variants × (p50, throughput)
    assert dom.count('class="change"') >= 4  # every series' step at run 12 is marked
    assert "0123456789" in dom and "regression" in dom
    # Thai: the same page, ?lang=th
    thai = page.with_name("th.html")
    thai.write_text(html, encoding="utf-8")
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'p2'}",
            "--dump-dom",
            thai.resolve().as_uri() + "#th",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert STRINGS["th"]["title"] in proc.stdout and 'lang="th"' in proc.stdout


@pytest.mark.slow
def test_the_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The check above can fail: a page whose script throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><script>undefinedFunction();</script></body></html>", encoding="utf-8")
    _dom, errors = _load(page, tmp_path)
    assert errors and "undefinedFunction" in " ".join(errors)
