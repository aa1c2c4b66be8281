"""Shared bits for the pilot.config unit tests."""

from __future__ import annotations

from pilot.config.parse import parse_text
from pilot.config.store import ConfigStore
from tests.support.processes import REPO

SAMPLES = REPO.parent / "shared" / "istio-samples" / "bookinfo"
NETWORKING = SAMPLES / "networking"
DR_ALL = NETWORKING / "destination-rule-all.yaml"


def load(store: ConfigStore, path) -> list:
    parsed = parse_text(path.read_text(), str(path))
    assert parsed.ok, [str(p) for p in parsed.problems]
    return store.apply(parsed.configs, lines=parsed.lines)


def errors(problems) -> list[str]:
    return [str(p) for p in problems if p.is_error]


VS_HEAD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
"""
