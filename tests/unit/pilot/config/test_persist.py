"""--config-store: what the apply API took is on disk, atomically, and comes back after a restart."""

from __future__ import annotations

import json

import pytest

from pilot.config.parse import parse_text
from pilot.config.persist import ConfigStoreError, PersistentConfig
from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey
from tests.unit.pilot.config.helpers import DR_ALL, VS_HEAD, errors, load

VS_V3 = VS_HEAD + "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n"
VS_V1 = VS_V3.replace("subset: v3", "subset: v1")
REVIEWS = ConfigKey("VirtualService", "default", "reviews")


def durable(tmp_path) -> tuple[ConfigStore, PersistentConfig]:
    disk = PersistentConfig(tmp_path / "store", config_dir=tmp_path / "config-dir")
    disk.open()
    return ConfigStore(persist=disk.save), disk


def restarted(disk: PersistentConfig) -> ConfigStore:
    """A new pilot process: a fresh store restored from the same directory."""
    store = ConfigStore(persist=disk.save)
    store.restore(PersistentConfig(disk.directory).load())
    return store


def apply_text(store: ConfigStore, text: str, file: str = "vs.yaml") -> list:
    """As the apply API does: the configs carry the file name `isthmus apply` sent."""
    parsed = parse_text(text, file)
    assert parsed.ok, parsed.problems
    return store.apply(parsed.configs, "api")


def test_applied_config_survives_a_restart_as_the_user_wrote_it(tmp_path):
    store, disk = durable(tmp_path)
    assert not errors(load(store, DR_ALL))
    assert not errors(apply_text(store, VS_V3))
    before = {c.key: c for c in store.snapshot().all()}

    again = restarted(disk)
    after = {c.key: c for c in again.snapshot().all()}
    assert after.keys() == before.keys() and REVIEWS in after
    for key, c in before.items():
        got = after[key]
        assert (got.spec, got.group, got.version, got.labels, got.resource_version, got.source) == (
            c.spec, c.group, c.version, c.labels, c.resource_version, c.source,
        )  # fmt: skip
    # one Kubernetes-style JSON object per resource, at <Kind>/<namespace>/<name>.json
    stored = json.loads(disk.path(REVIEWS).read_text())
    assert stored["source"] == "vs.yaml"
    obj = stored["resource"]
    assert obj["kind"] == "VirtualService" and obj["apiVersion"] == "networking.istio.io/v1"
    assert obj["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v3"
    assert disk.path(REVIEWS) == tmp_path / "store" / "VirtualService" / "default" / "reviews.json"


def test_a_change_and_a_delete_are_stored_and_versions_are_never_reused(tmp_path):
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    apply_text(store, VS_V3)
    apply_text(store, VS_V1)
    rv = store.snapshot().get("VirtualService", "default", "reviews").resource_version
    again = restarted(disk)
    assert (
        again.snapshot()
        .get("VirtualService", "default", "reviews")
        .spec["http"][0]["route"][0]["destination"]["subset"]
        == "v1"
    )
    assert not errors(apply_text(again, VS_V1))  # the same file again: unchanged, as before the restart
    assert again.snapshot().get("VirtualService", "default", "reviews").resource_version == rv
    apply_text(again, VS_V3)  # a change after the restart gets a newer version than any before
    assert again.snapshot().get("VirtualService", "default", "reviews").resource_version > rv

    deleted, _ = again.delete([REVIEWS])
    assert deleted == [REVIEWS] and not disk.path(REVIEWS).exists()
    third = restarted(disk)
    assert third.snapshot().get("VirtualService", "default", "reviews") is None
    assert third.snapshot().list("DestinationRule")  # the rest is still there


def test_config_dir_files_are_not_stored_and_a_file_taking_a_key_back_removes_its_copy(tmp_path):
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    in_dir = str((tmp_path / "config-dir").resolve() / "vs.yaml")
    apply_text(store, VS_V3, file=in_dir)
    assert not disk.path(REVIEWS).exists()
    apply_text(store, VS_V1)  # the API overrides the file's resource: stored
    assert disk.path(REVIEWS).exists()
    store.replace_source(in_dir, parse_text(VS_V3, in_dir).configs)  # the file again
    assert store.snapshot().get("VirtualService", "default", "reviews").source == in_dir
    assert not disk.path(REVIEWS).exists()


def test_restore_takes_stored_config_without_cross_checks_and_notifies(tmp_path):
    """A stored VirtualService whose subsets came from a DestinationRule that is gone (or not loaded
    yet) is still restored: the store does not re-judge what it accepted."""
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    apply_text(store, VS_V3)
    disk.path(ConfigKey("DestinationRule", "default", "reviews")).unlink()
    again = ConfigStore(persist=disk.save)
    seen = []
    again.subscribe(lambda changed, snap: seen.append(changed))
    again.restore(disk.load())
    assert again.snapshot().get("VirtualService", "default", "reviews") is not None
    assert seen and REVIEWS in seen[0]


def envelope(obj: dict) -> str:
    return json.dumps({"source": "vs.yaml", "resource": obj})


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", 'expected {"source"'),
        (json.dumps({"source": "vs.yaml", "resource": []}), 'expected {"source"'),
        (
            envelope({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "reviews", "namespace": "default"},
                        "spec": {"hosts": ["reviews"], "http": [{"route": "nope"}]}}),
            "spec.http[0].route",
        ),
        (
            envelope({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "other", "namespace": "default"}, "spec": {"hosts": ["x"]}}),
            "belongs in",
        ),
        (
            envelope({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "x"},
                        "spec": {"hosts": ["x"]}}),
            "resourceVersion",
        ),
    ],
)  # fmt: skip
def test_a_corrupt_file_is_a_clear_start_up_error_naming_it(tmp_path, content, message):
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    apply_text(store, VS_V3)
    disk.path(REVIEWS).write_text(content)
    with pytest.raises(ConfigStoreError) as e:
        PersistentConfig(disk.directory).load()
    assert str(disk.path(REVIEWS)) in str(e.value) and message in str(e.value), str(e.value)


def test_a_write_that_fails_refuses_the_change_and_leaves_disk_and_memory_as_they_were(tmp_path):
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    apply_text(store, VS_V1)
    before_snapshot = store.snapshot()
    before_file = disk.path(REVIEWS).read_text()
    calls = []
    real = disk._write

    def failing(path, text):
        calls.append(path)
        if len(calls) == 2:  # the second file of the batch fails: the first is put back
            raise OSError(28, "No space left on device")
        real(path, text)

    disk._write = failing
    two = (
        VS_V3
        + "---\n"
        + VS_V3.replace("name: reviews", "name: reviews-b").replace("[reviews]", "[reviews-b]")
    )
    problems = apply_text(store, two)
    assert any(
        "could not store the change durably" in e and "No space left" in e for e in errors(problems)
    ), problems
    assert store.snapshot() is before_snapshot
    disk._write = real
    assert disk.path(REVIEWS).read_text() == before_file
    assert not disk.path(ConfigKey("VirtualService", "default", "reviews-b")).exists()


def test_a_crash_mid_write_leaves_only_a_hidden_temporary_file_which_load_ignores(tmp_path):
    store, disk = durable(tmp_path)
    load(store, DR_ALL)
    apply_text(store, VS_V3)
    leftover = disk.path(REVIEWS).parent / ".reviews.json.abc.tmp"
    leftover.write_text("{half")
    assert {c.key for c in disk.load()} >= {REVIEWS}
    assert not [p for p in disk.directory.rglob("*") if p.name.startswith(".") and p != leftover]


def test_open_refuses_a_path_it_cannot_make_a_directory_of(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigStoreError, match="cannot write there"):
        PersistentConfig(tmp_path / "a-file" / "store").open()
