"""Bootstrap tokens: sign/verify, expiry, forgery (another key, edited claims, alg none)."""

import base64
import json

import pytest

from citadel.ca import tokens
from citadel.ca.errors import CaError

KEY = b"k" * 32


def test_round_trip_names_namespace_and_service_account():
    token = tokens.create(KEY, "default", "bookinfo", ttl=3600, now=1000)
    claims = tokens.verify(KEY, token, now=1001)
    assert (claims.namespace, claims.service_account, claims.expires_at) == ("default", "bookinfo", 4600)


def test_expired_token_is_unauthenticated():
    token = tokens.create(KEY, "default", "bookinfo", ttl=10, now=1000)
    with pytest.raises(CaError) as e:
        tokens.verify(KEY, token, now=1010)
    assert (e.value.kind, e.value.reason) == ("unauthenticated", "expired_token")


def test_token_signed_with_another_key_is_refused():
    token = tokens.create(b"x" * 32, "default", "bookinfo", ttl=60)
    with pytest.raises(CaError) as e:
        tokens.verify(KEY, token)
    assert e.value.reason == "invalid_token" and "signature" in e.value.message


def _segment(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_edited_claims_break_the_signature():
    header, claims, sig = tokens.create(KEY, "default", "bookinfo", ttl=60).split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=="))
    body["kubernetes.io"]["serviceaccount"]["name"] = "admin"
    with pytest.raises(CaError) as e:
        tokens.verify(KEY, f"{header}.{_segment(body)}.{sig}")
    assert e.value.reason == "invalid_token"


def test_alg_none_is_refused():
    _, claims, _ = tokens.create(KEY, "default", "bookinfo", ttl=60).split(".")
    with pytest.raises(CaError) as e:
        tokens.verify(KEY, f"{_segment({'alg': 'none'})}.{claims}.")
    assert "algorithm" in e.value.message


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "..."])
def test_malformed_tokens(token):
    with pytest.raises(CaError) as e:
        tokens.verify(KEY, token)
    assert e.value.kind == "unauthenticated"
