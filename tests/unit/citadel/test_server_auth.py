"""Caller authentication: bearer token or client certificate; nothing else gets in."""

import pytest

from citadel.ca import tokens
from citadel.ca.errors import CaError
from citadel.server import auth

from .helpers import make_ca, make_csr

KEY = b"t" * 32


def test_bearer_token_names_the_identity():
    ca = make_ca()
    token = tokens.create(KEY, "default", "bookinfo", ttl=60)
    identity, method = auth.authenticate(ca, KEY, [("authorization", f"Bearer {token}")], None)
    assert identity.uri == "spiffe://cluster.local/ns/default/sa/bookinfo" and method == "token"


def test_client_certificate_names_the_identity():
    ca = make_ca()
    me = ca.identity("default", "bookinfo")
    chain = ca.sign(make_csr()[0], me, 60)
    assert auth.authenticate(ca, KEY, [], chain[0].encode()) == (me, "mtls")


@pytest.mark.parametrize(
    "metadata, reason",
    [([], "no_credentials"), ([("authorization", "Basic abc")], "malformed_token"),
     ([("authorization", "Bearer a.b.c")], "malformed_token")],
)  # fmt: skip
def test_refusals(metadata, reason):
    with pytest.raises(CaError) as e:
        auth.authenticate(make_ca(), KEY, metadata, None)
    assert (e.value.kind, e.value.reason) == ("unauthenticated", reason)
