"""The service against its own OpenAPI document: schemathesis, every check, a bounded number of examples."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.service import ServiceConfig

pytestmark = pytest.mark.slow  # schemathesis drives the service: seconds, not milliseconds

CONFIG = Path(__file__).with_name("schemathesis.toml")  # why some 4xx answers are right: see the file


@pytest.fixture(scope="module")
def svc(module_bundle: Path, service_starter: Any) -> Iterator[Any]:
    running = service_starter(ServiceConfig(model_dir=module_bundle, max_batch_files=4))
    yield running
    running.stop()


def test_schemathesis_all_checks_pass(svc: Any, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{svc.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 generated" not in out.stdout and " passed" in out.stdout
