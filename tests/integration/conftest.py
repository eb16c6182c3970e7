"""Shared fixtures for the integration tests: where the binaries are, and process cleanup."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bindir():
    d = ROOT / os.environ.get("ET_BUILD_DIR", "build/current")
    for name in ("edged", "originctl"):
        assert (d / name).exists(), f"{d / name} is not built (make)"
    return d
