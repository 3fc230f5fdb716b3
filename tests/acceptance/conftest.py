"""The served process, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine as DBEngine

from tests.served import Server


@pytest.fixture
def server(db: DBEngine, tmp_path: Path) -> Iterator[Server]:
    s = Server(db, tmp_path)
    try:
        s.wait_ready()
        yield s
    finally:
        s.kill()
