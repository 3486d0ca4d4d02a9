"""Fixtures for manifest tests: the built-in catalog and a scan helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import Problem
from runner.manifest import scan_manifest
from runner.models import JobSpec
from runner.routes import Catalog, load_catalog
from tests.manifest.manifest_helpers import Scan


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(environ={})


@pytest.fixture
def scan(catalog: Catalog) -> Scan:
    """``scan(path, route="openai")`` → (jobs, problems), both in file order."""

    def run(path: Path, route: str = "openai") -> tuple[list[JobSpec], list[Problem]]:
        jobs: list[JobSpec] = []
        problems: list[Problem] = []
        for item in scan_manifest(path, catalog.get(route), catalog):
            if isinstance(item, Problem):
                problems.append(item)
            else:
                jobs.append(item)
        return jobs, problems

    return run
