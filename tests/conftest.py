"""Shared pytest fixtures for lwengine tests."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "learnware-0.4.0.post1"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Root of the learnware 0.4.0.post1 golden fixtures; skips the test when they are absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"golden fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR
