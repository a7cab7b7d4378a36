"""Fixtures of the ingestion tests."""

from pathlib import Path

import pytest


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """An empty source folder."""
    path = tmp_path / "source"
    path.mkdir()
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty output folder (the image store and its journal go here)."""
    path = tmp_path / "out"
    path.mkdir()
    return path
