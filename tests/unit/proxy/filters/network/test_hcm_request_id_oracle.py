"""x-request-id: the %-formatted version-4 UUID against the uuid module's text of the same 128 bits."""

from __future__ import annotations

import random
import uuid

import pytest

from proxy.filters.network.http_connection_manager import manager
from proxy.filters.network.http_connection_manager.manager import _UUID_CLEAR, _UUID_SET, _request_id


def test_request_ids_are_the_uuid_text_of_the_same_random_bits():
    for seed in range(3000):
        random.seed(seed)
        got = _request_id()
        random.seed(seed)
        want = uuid.UUID(int=(random.getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
        assert got == str(want)
        assert want.version == 4 and want.variant == uuid.RFC_4122


@pytest.mark.parametrize("bits", [0, 1, 1 << 127, (1 << 128) - 1])
def test_leading_zeros_and_every_bit_set(bits, monkeypatch):
    monkeypatch.setattr(manager, "_getrandbits", lambda k: bits)
    assert _request_id() == str(uuid.UUID(int=(bits & _UUID_CLEAR) | _UUID_SET))
