"""A real uvicorn server on 127.0.0.1 (a free port) around real ONNX bundles, and real images made with Pillow."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.service import ServiceConfig

from models import make_bundle


@dataclass
class RunningService:
    """A started uvicorn.Server serving the detect app in a background thread."""

    url: str
    server: Any
    thread: threading.Thread

    @property
    def service(self) -> Any:
        return self.server.config.app.state.service

    def wait(self, path: str = "/health/ready", status: int = 200, timeout: float = 30.0) -> httpx.Response:
        """Poll ``path`` until it answers ``status`` (bounded)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(self.url + path, timeout=5)
                if last.status_code == status:
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError(f"{path} did not answer {status} within {timeout} s (last: {last!r})")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0.0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "server did not stop"


def start_service(config: ServiceConfig, wait_ready: bool = True) -> RunningService:
    from bench.service.server import bind_socket, build_server, url_of

    sock = bind_socket("127.0.0.1", 0)
    server = build_server(config, graceful_timeout_s=10)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    running = RunningService(url=url_of(sock), server=server, thread=thread)
    running.wait("/health/live", 200)
    if wait_ready:
        running.wait("/health/ready", 200)
    return running


@pytest.fixture(scope="session")
def service_starter() -> Callable[..., RunningService]:
    """``start_service`` itself, for module-scoped servers (the caller stops them)."""
    return start_service


@pytest.fixture
def service_factory() -> Iterator[Callable[..., RunningService]]:
    """``service_factory(config, wait_ready=True)`` → a running service, stopped at teardown."""
    started: list[RunningService] = []

    def factory(config: ServiceConfig, wait_ready: bool = True) -> RunningService:
        running = start_service(config, wait_ready)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def module_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 32 px ViT-shaped bundle, id2label 0=Deepfake, 1=Real (the demo model's order)."""
    return make_bundle(tmp_path_factory.mktemp("svc") / "tiny")


# --- real images ----------------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class Images:
    """Image files as bytes, made with Pillow (and one hand-made PNG header for the bomb)."""

    @staticmethod
    def picture(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
        rng = np.random.default_rng(seed)
        return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")

    def jpeg(self, seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
        return _save(self.picture(size, seed), "JPEG", quality=95)

    def png(self, seed: int = 1) -> bytes:
        return _save(self.picture(seed=seed), "PNG")

    def webp(self) -> bytes:
        return _save(self.picture(seed=2), "WEBP")

    def bmp(self) -> bytes:
        return _save(self.picture(seed=3), "BMP")

    def tiff(self) -> bytes:
        return _save(self.picture(seed=4), "TIFF")

    def grey(self) -> bytes:
        return _save(self.picture(seed=5).convert("L"), "PNG")

    def rgba(self) -> bytes:
        img = self.picture(seed=6).convert("RGBA")
        img.putalpha(128)
        return _save(img, "PNG")

    def cmyk(self) -> bytes:
        return _save(self.picture(seed=7).convert("CMYK"), "JPEG")

    def png16(self) -> bytes:
        arr = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
        img = Image.fromarray(arr)  # uint16 → mode I;16
        data = _save(img, "PNG")
        assert Image.open(io.BytesIO(data)).mode.startswith("I"), "not a 16-bit PNG"
        return data

    def gif_animated(self) -> bytes:
        frames = [self.picture(seed=s).convert("P") for s in (8, 9, 10)]
        data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        return data

    @staticmethod
    def halves(size: tuple[int, int] = (64, 32)) -> Image.Image:
        """Left half bright red, right half dark blue: rotating it changes what a model sees."""
        w, h = size
        arr = np.zeros((h, w, 3), dtype=np.uint8)
        arr[:, : w // 2] = (230, 20, 20)
        arr[:, w // 2 :] = (10, 10, 120)
        return Image.fromarray(arr, "RGB")

    def exif_rotated(self, orientation: int = 6) -> bytes:
        """The halves picture stored sideways, with an EXIF Orientation tag saying how to turn it upright."""
        exif = Image.Exif()
        exif[0x0112] = orientation
        return _save(self.halves(), "JPEG", quality=95, exif=exif.tobytes())

    def truncated_jpeg(self) -> bytes:
        data = self.jpeg(seed=11, size=(128, 128))
        return data[: len(data) // 2]

    def truncated_png(self) -> bytes:
        data = self.png(seed=12)
        return data[: len(data) // 2]

    @staticmethod
    def bomb_png(side: int = 40_000) -> bytes:
        """A tiny PNG whose header claims side×side pixels (1.6 G px): a decompression bomb."""
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 1024)
        return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")

    @staticmethod
    def random_bytes(n: int = 4096) -> bytes:
        return np.random.default_rng(13).integers(0, 256, n, dtype=np.uint8).tobytes()

    html = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>'
    )


@pytest.fixture(scope="session")
def images() -> Images:
    return Images()
