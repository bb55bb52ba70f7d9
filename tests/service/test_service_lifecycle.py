"""Readiness, model-load failures, `bench serve` from a subprocess, graceful shutdown."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bench.faults import ENV_VAR
from bench.service import ServiceConfig

from models import make_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_not_ready_until_the_warm_up_inference_succeeded(
    service_factory: Any, module_bundle: Path, images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, json.dumps({"service_delay_ms": 1500}))  # the warm-up inference is slow
    svc = service_factory(ServiceConfig(model_dir=module_bundle), wait_ready=False)
    r = httpx.get(svc.url + "/health/ready")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "not_ready" and "loading" in r.json()["detail"]
    health = httpx.get(svc.url + "/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy" and health.json()["model_loaded"] is False
    r = httpx.post(svc.url + "/detect", files={"file": ("a.jpg", images.jpeg())})
    assert r.status_code == 503 and r.json()["error"] == "not_ready"
    assert httpx.get(svc.url + "/health/live").status_code == 200
    monkeypatch.delenv(ENV_VAR)
    svc.wait("/health/ready", 200)
    assert httpx.get(svc.url + "/health").json()["model_loaded"] is True


def _corrupt_bundle(root: Path) -> Path:
    make_bundle(root)
    (root / "onnx" / "model.onnx").write_bytes(b"this is not an ONNX protobuf" * 10)
    return root


@pytest.mark.parametrize(
    "case, expect",
    [
        ("corrupt", "not a valid ONNX model"),
        ("no_fake_label", "--positive-label"),
        ("unknown_variant", "available: fp32"),
        ("missing_dir", "does not exist"),
    ],
)
@pytest.mark.slow
def test_model_load_failure_keeps_the_server_up(
    service_factory: Any, tmp_path: Path, images: Any, case: str, expect: str
) -> None:
    variant = "fp32"
    if case == "corrupt":
        root = _corrupt_bundle(tmp_path / "m")
    elif case == "no_fake_label":
        root = make_bundle(tmp_path / "m", labels=("cat", "dog"))
    elif case == "unknown_variant":
        root, variant = make_bundle(tmp_path / "m"), "q7"
    else:
        root = tmp_path / "nowhere"
    svc = service_factory(ServiceConfig(model_dir=root, variant=variant), wait_ready=False)
    body = svc.wait("/health/ready", 503).json()
    deadline = time.monotonic() + 30
    while "failed" not in body["detail"] and time.monotonic() < deadline:
        time.sleep(0.05)
        body = httpx.get(svc.url + "/health/ready").json()
    assert "failed to load" in body["detail"] and expect in body["detail"], body
    r = httpx.post(svc.url + "/detect", files={"file": ("a.jpg", images.jpeg())})
    assert r.status_code == 503 and expect in r.json()["detail"] and "retry-after" in r.headers
    r = httpx.post(svc.url + "/detect/batch", files=[("files", ("a.jpg", images.jpeg()))])
    assert r.status_code == 503
    health = httpx.get(svc.url + "/health").json()
    assert health["status"] == "unhealthy" and health["model_state"] == "failed" and expect in health["reason"]
    assert svc.metric("bench_service_model_ready") == 0.0
    assert httpx.get(svc.url + "/health/live").status_code == 200


def test_positive_label_override_and_threshold(service_factory: Any, tmp_path: Path, images: Any) -> None:
    root = make_bundle(tmp_path / "m", labels=("cat", "dog"))
    data = images.jpeg(seed=5)
    svc = service_factory(ServiceConfig(model_dir=root, positive_label="dog", threshold=0.0))
    body = httpx.post(svc.url + "/detect", files={"file": ("a.jpg", data)}).json()
    assert body["fake_probability"] == pytest.approx(body["scores"]["dog"])
    assert body["is_deepfake"] is True and body["label"] == "dog" and body["threshold"] == 0.0
    strict = service_factory(ServiceConfig(model_dir=root, positive_label="1", threshold=1.0))
    body = httpx.post(strict.url + "/detect", files={"file": ("a.jpg", data)}).json()
    assert body["is_deepfake"] is False and body["label"] == "cat"
    assert body["confidence"] == pytest.approx(body["scores"]["cat"])


def test_decision_rule_is_the_evaluators() -> None:
    import numpy as np

    from bench.service.model import decide

    labels = {0: "Real", 1: "Fake", 2: "Other"}
    assert decide(np.array([0.5, 0.5]), {0: "Real", 1: "Fake"}, 1, 0.5)["is_deepfake"] is True  # ≥, not >
    out = decide(np.array([0.2, 0.3, 0.5]), labels, 1, 0.25)
    assert out["is_deepfake"] is True and out["label"] == "Fake"  # p(fake) ≥ T wins over argmax
    out = decide(np.array([0.2, 0.3, 0.5]), labels, 1, 0.5)
    assert out["is_deepfake"] is False and out["label"] == "Other" and out["confidence"] == 0.5


def test_cli_rejects_bad_flags_with_exit_2(tmp_path: Path) -> None:
    from bench.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["serve", "--max-batch", "0"]).exit_code == 2
    assert runner.invoke(main, ["serve", "--threshold", "1.5"]).exit_code == 2
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        result = runner.invoke(main, ["serve", "--model-dir", str(tmp_path), "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 2 and "cannot listen" in result.output


def _read_lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


@pytest.mark.slow
def test_bench_serve_subprocess_ready_line_and_graceful_drain(tmp_path: Path, images: Any) -> None:
    """`python -m bench serve --port 0` from another directory: ready line on stderr, SIGTERM drains in-flight."""
    bundle = make_bundle(tmp_path / "bundle")
    env = {**os.environ, ENV_VAR: json.dumps({"service_delay_ms": 800}), "PYTHONUNBUFFERED": "1"}
    env.pop("BENCH_MODEL_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "serve", "--model-dir", str(bundle), "--port", "0", "--max-batch", "4"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"bench serve exited {proc.returncode}: {seen}"
                continue
            seen.append(line)
            if line.startswith("bench serve: ready on "):
                url = line.split()[4]
        assert url is not None and url.startswith("http://127.0.0.1:"), seen
        assert httpx.get(url + "/health/ready").status_code == 200  # ready means ready, no polling needed

        result: dict[str, Any] = {}

        def in_flight() -> None:
            result["r"] = httpx.post(url + "/detect", files={"file": ("a.jpg", images.jpeg())}, timeout=30)

        client = threading.Thread(target=in_flight)
        client.start()
        time.sleep(0.3)  # the request is inside its 800 ms inference now
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        assert result["r"].status_code == 200, result["r"].text
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stderr.read() if proc.stderr else ""
    assert proc.stdout is not None and proc.stdout.read() == ""  # stdout stays clean
    time.sleep(0.1)
    while not lines.empty():
        seen.append(lines.get())
    assert any("bench serve: stopped" in line for line in [*seen, rest]), seen


def test_reading_the_servers_log_leaves_its_lines_intact() -> None:
    """The harness polls the log a child writes through the same open file: reading must not move the child's
    offset (a seek(0) there let later lines overwrite the first: `bench serve --cpus`'s early line hid the
    listening line in a clean-clone CI run)."""
    import tempfile

    from bench.service.harness import _written

    script = "import sys\nfor i in range(3000): print(f'line {i}', file=sys.stderr, flush=True)"
    with tempfile.TemporaryFile(mode="w+b") as log_file:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=log_file, stderr=subprocess.STDOUT)
        while child.poll() is None:
            _written(log_file)
        assert _written(log_file).splitlines() == [f"line {i}" for i in range(3000)]
