"""Fixtures of the GRE netns tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alt_router.lab import Lab
from tests.gre.tunnel_lab import make_lab


@pytest.fixture
def lab(root: None, tmp_path: Path) -> Iterator[Lab]:
    with make_lab(tmp_path) as built:
        yield built
