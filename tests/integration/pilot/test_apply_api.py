"""The apply API and `isthmus apply/get/delete/analyze` against a real `python -m pilot` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.integration.pilot.pilot_harness import start_pilot
from tests.support.processes import REPO

SAMPLES = REPO.parent / "shared" / "istio-samples" / "bookinfo"
NETWORKING = SAMPLES / "networking"
DR_ALL = NETWORKING / "destination-rule-all.yaml"
VS_API = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"

REVIEWS_V3 = (NETWORKING / "virtual-service-reviews-v3.yaml").read_text()


def isthmus(*args: str, pilot: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "isthmus", *args]
    if pilot is not None:
        cmd += ["--pilot", pilot]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.fixture
def pilot(procs):
    return start_pilot(procs)


def test_every_sample_file_applies_with_isthmus_apply(pilot):
    r = isthmus("apply", "-f", str(DR_ALL), pilot=pilot.http)
    assert r.returncode == 0, r.stderr
    assert "DestinationRule/default/reviews created" in r.stdout
    for path in sorted(NETWORKING.glob("*.yaml")):
        if path.name == "virtual-service-details-v2.yaml":
            # fault-injection-details-v1.yaml replaced the details rule with one that has only v1; the
            # Istio task re-applies destination-rule-all.yaml first, and so do we.
            assert isthmus("apply", "-f", str(DR_ALL), pilot=pilot.http).returncode == 0
        r = isthmus("apply", "-f", str(path), pilot=pilot.http)
        assert r.returncode == 0, f"{path.name}: {r.stderr}"
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            meta = doc["metadata"]
            expected = f"{doc['kind']}/{meta.get('namespace', 'default')}/{meta['name']}"
            assert expected in r.stdout, (path.name, r.stdout)
    # egress-rule-google-apis.yaml is accepted (ServiceEntry for www.googleapis.com with DNS resolution)
    # but no test sends traffic there: this environment has no route to real external hosts.
    se = httpx.get(
        pilot.http + "/apis/networking.istio.io/v1/namespaces/default/serviceentries/googleapis"
    ).json()
    assert se["spec"]["hosts"] == ["www.googleapis.com"]
    r = isthmus("apply", "-f", str(SAMPLES / "productpage_envoy_ratelimit.yaml"), pilot=pilot.http)
    assert r.returncode == 0 and "later issue" not in r.stderr  # accepted and translated (issue 7)
    r = isthmus("get", "envoyfilter", "-n", "istio-system", pilot=pilot.http)
    assert "filter-ratelimit-svc" in r.stdout


def test_get_list_and_delete(pilot):
    assert isthmus("apply", "-f", str(DR_ALL), pilot=pilot.http).returncode == 0
    vs_file = NETWORKING / "virtual-service-all-v1.yaml"
    assert isthmus("apply", "-f", str(vs_file), pilot=pilot.http).returncode == 0

    table = isthmus("get", "vs", pilot=pilot.http)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["details", "productpage", "ratings", "reviews"]

    one = isthmus("get", "virtualservices", "reviews", "-o", "yaml", pilot=pilot.http)
    obj = yaml.safe_load(one.stdout)
    assert (
        obj["kind"] == "VirtualService"
        and obj["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    )
    listed = json.loads(isthmus("get", "dr", "-A", "-o", "json", pilot=pilot.http).stdout)
    assert listed["kind"] == "DestinationRuleList" and len(listed["items"]) == 4

    # The same object is served under every version Istio serves it as.
    old = httpx.get(
        pilot.http + "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/reviews"
    )
    assert old.status_code == 200 and old.json()["apiVersion"] == "networking.istio.io/v1alpha3"

    r = isthmus("delete", "-f", str(vs_file), pilot=pilot.http)
    assert r.returncode == 0 and r.stdout.count(" deleted") == 4
    gone = isthmus("get", "vs", "reviews", pilot=pilot.http)
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert httpx.delete(pilot.http + VS_API + "/reviews").status_code == 404


def test_put_post_delete_one_resource(pilot):
    assert isthmus("apply", "-f", str(DR_ALL), pilot=pilot.http).returncode == 0
    headers = {"Content-Type": "application/yaml"}
    created = httpx.put(pilot.http + VS_API + "/reviews", content=REVIEWS_V3, headers=headers)
    assert created.status_code == 201, created.text
    assert "UnknownHost" in created.headers.get("warning", "")
    assert (
        httpx.put(
            pilot.http + VS_API + "/reviews", content=REVIEWS_V3.replace("v3", "v2"), headers=headers
        ).status_code
        == 200
    )
    assert httpx.post(pilot.http + VS_API, content=REVIEWS_V3, headers=headers).status_code == 409
    as_json = yaml.safe_load(REVIEWS_V3.replace("reviews", "ratings").replace("subset: v3", "subset: v1"))
    assert httpx.post(pilot.http + VS_API, json=as_json).status_code == 201
    assert (
        httpx.get(pilot.http + VS_API + "/reviews").json()["spec"]["http"][0]["route"][0]["destination"][
            "subset"
        ]
        == "v2"
    )
    deleted = httpx.delete(pilot.http + VS_API + "/ratings")
    assert deleted.status_code == 200 and deleted.json()["status"] == "Success"
    wrong = httpx.put(pilot.http + VS_API + "/other", content=REVIEWS_V3, headers=headers)
    assert wrong.status_code == 400 and "does not match" in wrong.json()["problems"][0]["message"]
    assert (
        httpx.get(pilot.http + "/apis/networking.istio.io/v1/namespaces/default/widgets").status_code == 404
    )


@pytest.mark.parametrize(
    "body, status, code, path",
    [
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews\n",
            400,
            "ParseError",
            "",
        ),
        (REVIEWS_V3.replace("  - route:", "  - rooute:"), 422, "SchemaError", "spec.http[0].rooute"),
        (
            REVIEWS_V3.replace("subset: v3", "subset: v9"),
            422,
            "ReferencedResourceNotFound",
            "spec.http[0].route[0].destination.subset",
        ),
        (
            REVIEWS_V3.replace("subset: v3", "subset: v3\n      weight: 50"),
            422,
            "InvalidWeights",
            "spec.http[0].route",
        ),
        (
            REVIEWS_V3.replace("  - route:", "  - corsPolicy: {maxAge: 1s}\n    route:"),
            422,
            "NotSupported",
            "spec.http[0].corsPolicy",
        ),
    ],
    ids=["invalid-yaml", "unknown-field", "missing-subset", "weights", "unsupported-field"],
)
def test_bad_input_is_refused_and_the_served_config_is_unchanged(pilot, body, status, code, path):
    assert isthmus("apply", "-f", str(DR_ALL), pilot=pilot.http).returncode == 0
    headers = {"Content-Type": "application/yaml"}
    assert httpx.put(pilot.http + VS_API + "/reviews", content=REVIEWS_V3, headers=headers).status_code == 201
    before = httpx.get(pilot.http + "/debug/configz").json()

    resp = httpx.put(pilot.http + VS_API + "/reviews", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    problems = resp.json()["problems"]
    assert problems[0]["code"] == code
    assert problems[0]["path"] == path
    if code != "ParseError":
        assert problems[0]["resource"] == "VirtualService/default/reviews"
    assert httpx.get(pilot.http + "/debug/configz").json() == before
    served = httpx.get(pilot.http + VS_API + "/reviews").json()
    assert served["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v3"


def test_isthmus_apply_reports_file_line_resource_and_path(pilot, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DR_ALL.read_text() + "\n---\n" + REVIEWS_V3.replace("subset: v3", "subset: v9"))
    r = isthmus("apply", "-f", str(bad), pilot=pilot.http)
    assert r.returncode == 1
    line = bad.read_text().splitlines().index("        subset: v9") + 1
    assert (
        f"{bad}:{line}: VirtualService/default/reviews: spec.http[0].route[0].destination.subset" in r.stderr
    )
    # All or nothing: the DestinationRules in the same file were not applied either.
    assert (
        httpx.get(pilot.http + "/apis/networking.istio.io/v1/namespaces/default/destinationrules").json()[
            "items"
        ]
        == []
    )


def test_isthmus_apply_without_pilot_says_where_it_looked():
    r = isthmus("apply", "-f", str(DR_ALL), pilot="http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach pilot at http://127.0.0.1:9" in r.stderr


def test_analyze_exit_codes(tmp_path):
    ok = isthmus(
        "analyze",
        "-f",
        str(DR_ALL),
        "-f",
        str(NETWORKING / "virtual-service-all-v1.yaml"),
        "-f",
        str(SAMPLES / "platform" / "bookinfo.yaml"),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "No validation issues" in ok.stdout
    warn = isthmus("analyze", "-f", str(DR_ALL), "-f", str(NETWORKING / "virtual-service-all-v1.yaml"))
    assert warn.returncode == 0 and "UnknownHost" in warn.stdout  # no Service objects: warnings only
    bad = tmp_path / "vs.yaml"
    bad.write_text(REVIEWS_V3.replace("subset: v3", "subset: v3\n      weight: 40"))
    r = isthmus("analyze", "-f", str(DR_ALL), "-f", str(bad))
    assert r.returncode == 1
    assert (
        f"{bad}" in r.stdout
        and "VirtualService/default/reviews" in r.stdout
        and "spec.http[0].route" in r.stdout
    )
    assert isthmus("analyze", "-f", str(tmp_path / "missing.yaml")).returncode == 1


def test_config_dir_files_are_applied_and_removed(procs, tmp_path):
    (tmp_path / "dr.yaml").write_text(DR_ALL.read_text())
    (tmp_path / "vs.yaml").write_text(REVIEWS_V3)
    pilot = start_pilot(procs, tmp_path)  # ready once the directory is loaded
    served = httpx.get(pilot.http + VS_API + "/reviews")
    assert served.status_code == 200
    (tmp_path / "vs.yaml").unlink()
    deadline = time.monotonic() + 10
    while httpx.get(pilot.http + VS_API + "/reviews").status_code != 404:
        assert time.monotonic() < deadline, "removed file's VirtualService still served"
        time.sleep(0.05)
