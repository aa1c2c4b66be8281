import pytest

from mixer.config.model import ConfigError, parse


def test_empty_config_has_defaults():
    c = parse("")
    assert c.policy.rules == () and c.quota.failure_mode == "open" and c.telemetry.access_log_path is None


def test_full_config_parses():
    c = parse(
        """
policy:
  defaultValidDuration: 2s
  rules:
  - name: r1
    match: {"request.headers[End-User]": jason}
    list: {attribute: request.headers.x-user, entryType: CASE_INSENSITIVE_STRINGS, entries: [Bob]}
    validUseCount: 5
  - name: r2
    denier: {status: {code: 14, message: down}}
    httpStatus: 503
quota:
  failureMode: closed
  domains:
  - domain: d
    descriptors:
    - key: k
      value: v
      rate_limit: {unit: MINUTE, requests_per_unit: 3}
      descriptors:
      - key: inner
        shadow_mode: true
        rate_limit: {unit: hour, requests_per_unit: 1}
telemetry: {maxSeriesPerMetric: 7, accessLog: {}}
""",
        "f.yaml",
    )
    r1, r2 = c.policy.rules
    assert r1.match == (("request.headers.end-user", "jason"),)
    assert r1.attribute == "request.headers.x-user" and r1.matcher.contains("BOB")
    assert r1.validity.duration_s == 2.0 and r1.validity.use_count == 5
    assert (
        r2.kind == "denier" and r2.status_code == 14 and r2.http_status == 503 and r2.status_message == "down"
    )
    [node] = c.quota.domains["d"]
    assert node.rate_limit.window_s == 60 and node.children[0].shadow_mode and node.children[0].value is None
    assert c.quota.failure_mode == "closed"
    assert c.telemetry.max_series_per_metric == 7 and c.telemetry.access_log_path == "-"


@pytest.mark.parametrize(
    "text, message",
    [
        ("polcy: {}", "f.yaml: polcy: unsupported field"),
        ("policy: {rules: [{name: a}]}", "policy.rules[0]: expected exactly one adapter"),
        (
            "policy: {rules: [{name: a, denier: {}, list: {}}]}",
            "policy.rules[0]: expected exactly one adapter",
        ),
        (
            "policy: {rules: [{name: a, denier: {}}, {name: a, denier: {}}]}",
            "policy.rules[1].name: duplicate",
        ),
        ("policy: {rules: [{name: a, denier: {}, validDuration: soon}]}", "policy.rules[0].validDuration"),
        (
            "policy: {rules: [{name: a, denier: {}, status: {code: NOPE}}]}",
            "policy.rules[0].status.code: unknown",
        ),
        ("policy: {rules: [{name: a, denier: {}, httpStatus: 700}]}", "policy.rules[0].httpStatus"),
        (
            "policy: {rules: [{name: a, list: {attribute: x}}]}",
            "policy.rules[0].list.attribute: unknown attribute",
        ),
        (
            "policy: {rules: [{name: a, list: {attribute: source.ip, entryType: IP_ADDRESSES, entries: [nope]}}]}",
            "policy.rules[0].list.entries[0]: not an IP address",
        ),
        (
            "policy: {rules: [{name: a, list: {attribute: request.path, entryType: REGEX, entries: ['(']}}]}",
            "policy.rules[0].list.entries[0]: bad regex",
        ),
        (
            "policy: {rules: [{name: a, list: {attribute: source.ip, mode: maybe}}]}",
            "list.mode: expected one of",
        ),
        ("quota: {failureMode: sometimes}", "quota.failureMode: expected one of open, closed"),
        ("quota: {domains: [{domain: d}, {domain: d}]}", "quota.domains[1].domain: duplicate"),
        (
            "quota: {domains: [{domain: d, descriptors: [{key: k, rate_limit: {unit: second}}]}]}",
            "descriptors[0].rate_limit.requests_per_unit",
        ),
        (
            "quota: {domains: [{domain: d, descriptors: [{key: k, detailed_metric: true}]}]}",
            "descriptors[0].detailed_metric: unsupported field",
        ),
        ("telemetry: {maxSeriesPerMetric: 0}", "telemetry.maxSeriesPerMetric"),
        ("policy: [", "f.yaml: not valid YAML"),
        ("- a list", "f.yaml: expected a mapping"),
    ],
)
def test_bad_config_names_the_field(text, message):
    with pytest.raises(ConfigError) as e:
        parse(text, "f.yaml")
    assert message in str(e.value)
