"""Shared fixtures: the public data beside the project (../shared/data), never copied in."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "names.txt").exists():
        pytest.skip(f"the shared data is not at {SHARED_DATA}")
    return SHARED_DATA
