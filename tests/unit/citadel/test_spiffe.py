import pytest

from citadel.ca import spiffe


def test_round_trip():
    ident = spiffe.parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
    assert ident.uri == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert (ident.namespace, ident.service_account) == ("default", "bookinfo-productpage")


@pytest.mark.parametrize(
    "uri",
    [
        "https://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local/ns/a",
        "spiffe://cluster.local/sa/b/ns/a",
        "spiffe://cluster.local/ns/A/sa/b",
        "spiffe:///ns/a/sa/b",
        "spiffe://cluster.local/ns/a/sa/b/extra",
    ],
)
def test_rejects_non_workload_ids(uri):
    with pytest.raises(ValueError):
        spiffe.parse(uri)
