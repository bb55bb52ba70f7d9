from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from models import make_bundle

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A real transformers.js-style model folder with a tiny ViT-shaped classifier (32 px, Deepfake/Real)."""
    return make_bundle(tmp_path / "tiny")


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    return REPO / "variants" / "demo"


@pytest.fixture(scope="session")
def demo_dataset() -> Path:
    return REPO / "datasets" / "demo"
