"""Fixtures of the perf suite: the demo bundle (or a stand-in), an engine on it, a real image.

The suite runs on ``variants/demo`` once the trained demo bundle is there (``TRAINING.md`` marks it);
until then on a 224 px ViT-shaped model from ``tests/models.py`` (about 1 ms per call on one core),
so the figures are about a model of realistic input size, not a 16 px toy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import demo_or_standin


@pytest.fixture(scope="session")
def perf_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, why = demo_or_standin(tmp_path_factory.mktemp("perf"))
    print(f"\nperf suite model: {root} ({why})")
    return root


@pytest.fixture(scope="session")
def perf_engine(perf_bundle: Path) -> Any:
    """The fp32 variant on CPU with one intra-op thread: on a
    shared 2-core machine a 2-thread pool waits on a neighbour at every op, and the spread swamps
    the few-percent effects this suite measures."""
    from bench.bundle import Bundle
    from bench.engine import Engine, SessionSpec

    bundle = Bundle.discover(perf_bundle)
    return Engine(bundle.variants["fp32"], "cpu", SessionSpec(threads=1))


@pytest.fixture(scope="session")
def image_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from perf_common import sample_image

    return sample_image(tmp_path_factory.mktemp("img")).read_bytes()
