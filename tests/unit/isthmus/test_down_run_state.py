"""What `isthmus down` needs to remove one transparent run: the run's prefix and id in state.json, and
the names that belong to exactly that run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from isthmus.commands import down
from isthmus.launcher import local, state
from isthmus.launcher.netns import PlanError, Workload, of_run, plan_mesh


def test_the_recorder_writes_the_runs_namespace_prefix_and_id(tmp_path: Path):
    net = plan_mesh([Workload("a")], prefix="isth-", run_id="0a1b2c")
    options = SimpleNamespace(state_dir=str(tmp_path), gateway_url="g", dashboard_url="d", pilot_url="p")
    local.state_recorder(options, net=net)({"a": 42})
    raw = json.loads(state.path(tmp_path).read_text())
    assert raw["netns_prefix"] == "isth-" and raw["netns_run_id"] == "0a1b2c"
    st = state.read(tmp_path)
    assert (st.netns_prefix, st.netns_run_id, st.children) == ("isth-", "0a1b2c", {"a": 42})


def test_a_local_run_records_no_namespaces_and_old_state_files_still_read(tmp_path: Path):
    options = SimpleNamespace(state_dir=str(tmp_path), gateway_url="", dashboard_url="", pilot_url="")
    local.state_recorder(options)({})
    assert state.read(tmp_path).netns_run_id == ""
    state.path(tmp_path).write_text(json.dumps({"supervisor_pid": 7, "children": {"x": 8}}))
    assert state.read(tmp_path).netns_prefix == ""
    assert down.remove_run_netns(state.read(tmp_path)) == []  # nothing to remove, nothing listed


def test_of_run_keeps_only_the_runs_own_names():
    found = {
        "netns": ["isth-0a1b2c", "isth-0a1b2c-productpage-v1", "isth-ffffff", "isth-0a1b2cd"],
        "links": ["isth-0a1b2c-v01", "isth-ffffff-v01"],
        "netns_dirs": ["isth-0a1b2c-reviews-v1", "isth-ffffff-reviews-v1"],
    }
    assert of_run(found, "isth-", "0a1b2c") == {
        "netns": ["isth-0a1b2c", "isth-0a1b2c-productpage-v1"],
        "links": ["isth-0a1b2c-v01"],
        "netns_dirs": ["isth-0a1b2c-reviews-v1"],
    }


@pytest.mark.parametrize(
    "prefix, run_id", [("isth-", ""), ("isth-", "../etc"), ("", "0a1b2c"), ("x", "0a1b2c")]
)
def test_of_run_refuses_a_damaged_prefix_or_run_id(prefix, run_id):
    with pytest.raises(PlanError):
        of_run({"netns": ["isth-0a1b2c"]}, prefix, run_id)


def test_a_damaged_run_id_in_the_state_file_is_reported_not_acted_on():
    st = state.UpState(supervisor_pid=1, netns_prefix="isth-", netns_run_id="*")
    problems = down.remove_run_netns(st)
    assert len(problems) == 1 and "run id" in problems[0]
