"""Fixtures of the inference tests."""

import pytest

from ._files import dark_png16


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A 0.33 MB 16-bit PNG of 13000 x 13000 pixels (338 MB decoded): built once a session."""
    return dark_png16(13_000, 13_000)
