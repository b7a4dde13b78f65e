"""Fixtures for end-to-end tests against a real FHIR R4 server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fhir_server import SekmetServer, running_fhir_server


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    """One SEKMET FHIR server for the whole test session (started in about a second)."""
    with running_fhir_server(tmp_path_factory.mktemp("fhir-server")) as server:
        yield server


@pytest.fixture
def clean_fhir_server(fhir_server: SekmetServer) -> Iterator[SekmetServer]:
    """The session's FHIR server, with whatever the test seeded deleted afterwards."""
    yield fhir_server
    fhir_server.reset()
