"""The config file is reloaded live; a bad version is rejected with the file and field named and the
previous config keeps deciding; a bad config at start stops mixer with a clear error."""

from __future__ import annotations

import subprocess
import sys

import grpc

from tests.integration.mixer.harness import start_mixer, wait_until
from tests.integration.mixer.test_policy import check_request
from tests.support.processes import REPO

ALICE = "spiffe://cluster.local/ns/default/sa/alice"
BOB = "spiffe://cluster.local/ns/default/sa/bob"
DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


def deny(principal: str) -> str:
    return f"""
policy:
  rules:
  - name: deny-one
    list: {{attribute: source.principal, entries: ["{principal}"]}}
"""


def test_reload_applies_new_config_and_keeps_old_on_error(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, deny(ALICE))
    stub = mixer.authz()

    def code(principal):
        return stub.Check(check_request(principal), timeout=5).status.code

    assert code(ALICE) == DENIED and code(BOB) == 0

    mixer.config.write_text(deny(BOB))
    wait_until(lambda: code(BOB) == DENIED, what="the new config in force")
    assert code(ALICE) == 0

    mixer.config.write_text(deny(ALICE).replace("source.principal", "source.nickname"))
    wait_until(lambda: "event=config.rejected" in procs.output(mixer.proc), what="the bad config reported")
    out = procs.output(mixer.proc)
    assert f"{mixer.config}: policy.rules[0].list.attribute: unknown attribute 'source.nickname'" in out
    assert code(BOB) == DENIED and code(ALICE) == 0  # still the previous config
    assert mixer.metric_sum("mixer_config_reloads_total", result="failure") == 1
    assert mixer.metric_sum("mixer_config_last_reload_successful") == 0

    mixer.config.write_text("policy: [not, a, mapping")
    wait_until(
        lambda: mixer.metric_sum("mixer_config_reloads_total", result="failure") == 2, what="YAML error"
    )
    assert code(BOB) == DENIED

    mixer.config.write_text(deny(ALICE))
    wait_until(lambda: code(ALICE) == DENIED, what="recovery with a good config")
    assert mixer.metric_sum("mixer_config_last_reload_successful") == 1


def test_bad_config_at_start_exits_with_the_field_named(tmp_path):
    bad = tmp_path / "mixer.yaml"
    bad.write_text(
        "quota:\n  domains:\n  - domain: d\n    descriptors:\n    - key: k\n      rate_limit: {unit: fortnight, requests_per_unit: 1}\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mixer",
            "--config",
            str(bad),
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 1
    assert (
        f"mixer: {bad}: quota.domains[0].descriptors[0].rate_limit.unit: expected one of second, minute, hour, day"
        in r.stderr
    )
