"""The config-dir watcher as pilot runs it: each rejected file version counts once."""

from pilot.config.store import ConfigStore
from pilot.server.app import counting_watcher

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v3, labels: {version: v3}}]
"""


def test_each_rejected_file_version_counts_once(tmp_path):
    rejected = []
    store = ConfigStore()
    # a.yaml needs the subset b.yaml defines: the first scan retries it and then takes it (not counted)
    (tmp_path / "a.yaml").write_text(VS)
    (tmp_path / "b.yaml").write_text(DR)
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    watcher = counting_watcher(store, str(tmp_path), lambda: rejected.append(1))
    watcher.scan()
    assert len(rejected) == 1 and store.snapshot().get("VirtualService", "default", "reviews") is not None
    watcher.scan()  # nothing changed: nothing counted
    assert len(rejected) == 1
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: Nope\nmetadata: {name: x}\n"
    )
    watcher.scan()
    assert len(rejected) == 2
    (tmp_path / "bad.yaml").unlink()
    watcher.scan()
    assert len(rejected) == 2
