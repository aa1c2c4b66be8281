"""The vendored front-end libraries are exactly the files vendor/README.md names, with their licenses."""

import hashlib
import re

from mixer.server.http_api import DASHBOARD

VENDOR = DASHBOARD / "vendor"


def listed() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (VENDOR / "README.md").read_text(), re.M)
    return dict(rows)


def test_every_vendored_file_matches_its_listed_sha256():
    files = listed()
    assert set(files) == {"cytoscape.min.js", "uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in files.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_nothing_unlisted_is_vendored_and_licenses_ship():
    names = {p.name for p in VENDOR.iterdir()}
    assert names == set(listed()) | {"README.md", "cytoscape.LICENSE", "uPlot.LICENSE"}
    for license_file in ("cytoscape.LICENSE", "uPlot.LICENSE"):
        assert "Permission is hereby granted" in (VENDOR / license_file).read_text()
