"""--config-dir: files added, changed, broken and removed (driven by scan(), no sleeping)."""

from __future__ import annotations

import os

from pilot.config import problems as P
from pilot.config.store import ConfigStore
from pilot.config.watcher import DirWatcher
from tests.unit.pilot.config.helpers import DR_ALL, NETWORKING


def write(path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a visible change even within one tick


def test_load_change_break_and_remove(tmp_path):
    store = ConfigStore()
    # The VirtualService file sorts before the rules it needs: the first scan still applies both.
    write(tmp_path / "a-vs.yaml", (NETWORKING / "virtual-service-reviews-v3.yaml").read_text())
    write(tmp_path / "b-dr.yaml", DR_ALL.read_text())
    w = DirWatcher(store, tmp_path)
    w.scan()
    snap = store.snapshot()
    assert (
        snap.get("VirtualService", "default", "reviews").spec["http"][0]["route"][0]["destination"]["subset"]
        == "v3"
    )
    assert len(snap.list("DestinationRule")) == 4
    assert not any(P.has_errors(v) for v in w.problems.values())

    # A bad edit is reported with the file and the previous content keeps being served.
    write(
        tmp_path / "a-vs.yaml",
        (NETWORKING / "virtual-service-reviews-v3.yaml").read_text().replace("subset: v3", "subset: v7"),
    )
    w.scan()
    assert store.snapshot() is snap
    [err] = [p for p in w.problems[str(tmp_path / "a-vs.yaml")] if p.is_error]
    assert err.file == str(tmp_path / "a-vs.yaml") and "v7" in err.message
    write(tmp_path / "a-vs.yaml", "kind: [\n")
    w.scan()
    assert store.snapshot() is snap and w.problems[str(tmp_path / "a-vs.yaml")][0].code == P.PARSE

    # A good edit replaces what the file defined; a resource dropped from a file is deleted.
    write(tmp_path / "b-dr.yaml", DR_ALL.read_text().split("---")[1])  # only the reviews rule
    w.scan()
    assert [c.name for c in store.snapshot().list("DestinationRule")] == ["reviews"]

    # Removing a file deletes its resources.
    (tmp_path / "b-dr.yaml").unlink()
    w.scan()
    assert store.snapshot().list("DestinationRule") == []


def test_same_resource_in_two_files_is_refused(tmp_path):
    store = ConfigStore()
    write(tmp_path / "one.yaml", DR_ALL.read_text())
    w = DirWatcher(store, tmp_path)
    w.scan()
    write(tmp_path / "two.yaml", DR_ALL.read_text().split("---")[1])
    w.scan()
    assert [p.code for p in w.problems[str(tmp_path / "two.yaml")]] == [P.DUPLICATE]
    assert str(tmp_path / "one.yaml") in w.problems[str(tmp_path / "two.yaml")][0].message
    assert len(store.snapshot().list("DestinationRule")) == 4


def test_a_fix_elsewhere_unblocks_a_failed_file(tmp_path):
    store = ConfigStore()
    write(tmp_path / "vs.yaml", (NETWORKING / "virtual-service-reviews-v3.yaml").read_text())
    w = DirWatcher(store, tmp_path)
    w.scan()
    assert store.snapshot().all() == []
    write(tmp_path / "dr.yaml", DR_ALL.read_text())
    w.scan()
    assert store.snapshot().get("VirtualService", "default", "reviews") is not None


def test_start_and_stop_thread(tmp_path):
    store = ConfigStore()
    write(tmp_path / "dr.yaml", DR_ALL.read_text())
    w = DirWatcher(store, tmp_path, interval=0.05).start()
    try:
        assert len(store.snapshot().list("DestinationRule")) == 4  # start() loads before returning
    finally:
        w.stop()
    assert not w._thread.is_alive()
