"""Fixtures of the engine's unit tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cds_service.domain.content import Content
from cds_service.edge.content import load_content

from .factories import CARDS


@pytest.fixture
def tmp_cards(tmp_path: Path) -> Callable[[Callable[[Path], object]], Content]:
    """Copy cards/ to a tmp dir, apply an edit, and load the edited content."""

    def make(edit: Callable[[Path], object]) -> Content:
        target = tmp_path / "cards"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CARDS, target)
        edit(target)
        return load_content(target)

    return make
