"""Fixtures shared by every test. Component-specific fixtures live next to their tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.processes import REPO, ProcessGroup

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def procs():
    """Start processes with `procs.python(...)`/`procs.start(...)`; all are stopped after the test."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and logs for a person to look at (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config, items):
    # Tests that need root (network namespaces, iptables) are skipped with a reason when not root,
    # so a non-root developer still gets a green unit run. CI runs as root and runs them all.
    if os.geteuid() == 0 and shutil.which("ip") and shutil.which("iptables"):
        return
    skip = pytest.mark.skip(reason="needs root with ip and iptables (network namespaces)")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
