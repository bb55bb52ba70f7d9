"""The reports people open: report.html in headless Debian ``chromium`` with no console error, every plot
decoded; report paths that do not print the layout of the machine they were made on (#29 items 12, done-when).

Chromium is driven over the DevTools protocol (aiohttp's websocket client): console errors, uncaught
exceptions and log entries of level error (a resource that fails to load, a blocked request) are collected
while the page loads from ``file://``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from cli import run_bench

EXAMPLE = Path(__file__).resolve().parent.parent / "reports" / "example"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_ws(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError("chromium did not start its DevTools endpoint")


async def _open(ws_url: str, page: str) -> dict[str, Any]:
    """Load ``page`` in a new tab; the errors seen while loading and what the page says about its images."""
    import aiohttp

    ids = itertools.count(1)
    errors: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        session: str | None = None
        loaded = asyncio.Event()

        async def call(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            mid = next(ids)
            msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
            if session is not None:
                msg["sessionId"] = session
            await ws.send_json(msg)
            while True:
                data = json.loads((await ws.receive()).data)
                if data.get("id") == mid:
                    assert "error" not in data, data
                    return dict(data.get("result") or {})
                note(data)

        def note(event: dict[str, Any]) -> None:
            method, params = event.get("method"), event.get("params") or {}
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(f"exception: {details.get('text')} {(details.get('exception') or {}).get('description')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Page.loadEventFired":
                loaded.set()

        target = await call("Target.createTarget", {"url": "about:blank"})
        attached = await call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await call(f"{domain}.enable")
        await call("Page.navigate", {"url": page})

        async def pump() -> None:
            while not loaded.is_set():
                note(json.loads((await ws.receive()).data))

        await asyncio.wait_for(pump(), timeout=30)
        await asyncio.sleep(0.5)  # late console messages
        images = await call(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map(i => [i.complete, i.naturalWidth]))",
                "returnByValue": True,
            },
        )
        title = await call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})
    return {"errors": errors, "images": json.loads(images["result"]["value"]), "title": title["result"]["value"]}


def open_in_chromium(page: Path) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            return asyncio.run(_open(_browser_ws(proc), page.resolve().as_uri()))
        finally:
            # the whole group: renderer and utility children outliving the browser kept writing to the
            # profile while it was removed ("Directory not empty: 'Default'")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed example re-rendered by ``bench report --html`` from another working folder."""
    folder = tmp_path_factory.mktemp("html") / "example"
    folder.mkdir()
    shutil.copy(EXAMPLE / "results.json", folder / "results.json")
    for lang in ("en", "th"):
        p = run_bench("report", str(folder), "--html", "--lang", lang, cwd=folder.parent, timeout=300)
        assert p.returncode == 0, p.stderr
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", ["report.html", "report.th.html"])
def test_html_report_opens_in_chromium_without_console_errors(rendered: Path, page: str) -> None:
    seen = open_in_chromium(rendered / page)
    assert seen["errors"] == []
    assert seen["images"] and all(complete and width > 0 for complete, width in seen["images"])  # plots decoded
    assert seen["title"]


@pytest.mark.slow
def test_a_broken_page_is_caught(tmp_path: Path) -> None:
    """The check itself: a missing image and a script error are reported (the test can fail)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><title>x</title><img src="plots/missing.png"><script>nope()</script>')
    seen = open_in_chromium(page)
    assert any("missing.png" in e for e in seen["errors"]) and any("nope" in e for e in seen["errors"])


@pytest.mark.slow
def test_reports_show_paths_relative_to_the_working_folder(tmp_path: Path) -> None:
    folder = tmp_path / "example"
    folder.mkdir()
    shutil.copy(EXAMPLE / "results.json", folder / "results.json")
    data = json.loads((folder / "results.json").read_text())
    model_dir, dataset = Path(data["config"]["model_dir"]), Path(data["dataset"]["path"])
    for cwd in (tmp_path, model_dir.parent):  # outside the model folder's tree, then inside it
        for lang in ("en", "th"):
            p = run_bench("report", str(folder), "--no-plots", "--lang", lang, cwd=cwd)
            assert p.returncode == 0, p.stderr
        for name in ("report.md", "report.th.md"):
            text = (folder / name).read_text()
            assert str(model_dir) not in text and str(dataset) not in text and str(tmp_path) not in text
    assert f"`{model_dir.name}`" in (folder / "report.md").read_text()  # inside: relative to the working folder
