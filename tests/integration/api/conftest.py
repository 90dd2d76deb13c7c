"""Fixtures of the API tests: an empty plant (modules that need data define their own
``plant``) and the app over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from isthmus.api import create_app
from isthmus.model.clock import ManualClock

from .plant import Plant, build_plant


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    plant = build_plant(tmp_path, ManualClock(start_ns=1_700_000_000 * 10**9))
    yield plant
    plant.store.close()


@pytest.fixture
def app(plant: Plant) -> FastAPI:
    return create_app(plant.ctx)
