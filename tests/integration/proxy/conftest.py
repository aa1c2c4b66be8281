"""Fixtures shared by the proxy's integration tests."""

import pytest

from tests.support.xds_server import XdsServer


@pytest.fixture
def xds():
    """A real ADS server (SotW and Delta) on a free port, stopped after the test."""
    server = XdsServer().start()
    try:
        yield server
    finally:
        server.stop()
