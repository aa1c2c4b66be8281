"""The few facts the proxy needs from an X.509 certificate, read with a small DER walk (pure).

The data path needs a certificate's subject alternative names (SAN matching, XFCC, RBAC, access
logs) and its subject (XFCC ``Subject``, RBAC). Loading ``cryptography`` for that costs ~9 MB of RSS
in every sidecar (its own OpenSSL build), so these are read from the DER here; ``ssl`` has already
verified the certificate. The admin ``/certs`` page still uses ``cryptography`` (imported there).

Only definite-length DER is accepted (what X.509 requires); anything malformed is a ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

_SEQUENCE, _SET, _OID, _OCTET_STRING, _BOOLEAN, _BIT_STRING = 0x30, 0x31, 0x06, 0x04, 0x01, 0x03
_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT in TBSCertificate
_SAN_OID = bytes.fromhex("551d11")  # 2.5.29.17
_GN_EMAIL, _GN_DNS, _GN_URI, _GN_IP = 0x81, 0x82, 0x86, 0x87

# RFC 4514 short names, as cryptography's Name.rfc4514_string() prints them (others: dotted OID).
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x1A: "ascii",  # VisibleString
    0x14: "latin-1",  # TeletexString (as cryptography decodes it)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the element at `pos`."""
    if pos + 2 > end:
        raise ValueError("truncated DER element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used in certificates")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise ValueError("DER element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        tag, s, e = _tlv(data, pos, end)
        yield tag, s, e
        pos = e


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    t, s, e = _tlv(data, pos, end)
    if t != tag:
        raise ValueError(f"{what}: expected tag 0x{tag:02x}, found 0x{t:02x}")
    return s, e


def _tbs_fields(der: bytes) -> list[tuple[int, int, int]]:
    s, e = _expect(der, 0, len(der), _SEQUENCE, "certificate")
    ts, te = _expect(der, s, e, _SEQUENCE, "tbsCertificate")
    return list(_children(der, ts, te))


def oid_text(raw: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's contents."""
    if not raw:
        raise ValueError("empty OID")
    arcs, value = [], 0
    for b in raw:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise ValueError("truncated OID")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _decode_string(tag: int, raw: bytes) -> str | bytes:
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        return raw  # BIT STRING and other non-string values print as #hex
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        raise ValueError(f"bad string in a name: {e}") from None


def _escape(value: str | bytes) -> str:
    """One attribute value per RFC 4514 section 2.4 (as cryptography escapes it)."""
    if not value:
        return ""
    if isinstance(value, bytes):
        return "#" + binascii.hexlify(value).decode()
    for ch, rep in (("\\", "\\\\"), ('"', '\\"'), ("+", "\\+"), (",", "\\,"), (";", "\\;"),
                    ("<", "\\<"), (">", "\\>"), ("\0", "\\00")):  # fmt: skip
        value = value.replace(ch, rep)
    if value[0] in ("#", " "):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _name_rfc4514(der: bytes, start: int, end: int) -> str:
    rdns = []
    for tag, s, e in _children(der, start, end):
        if tag != _SET:
            raise ValueError("a Name is a SEQUENCE of SETs")
        attrs = []
        for atag, a_s, a_e in _children(der, s, e):
            if atag != _SEQUENCE:
                raise ValueError("an attribute is a SEQUENCE")
            os_, oe = _expect(der, a_s, a_e, _OID, "attribute type")
            vtag, vs, ve = _tlv(der, oe, a_e)
            oid = oid_text(der[os_:oe])
            value = _decode_string(vtag, der[vs:ve])
            attrs.append(f"{_SHORT_NAMES.get(oid, oid)}={_escape(value)}")
        rdns.append("+".join(attrs))
    return ",".join(reversed(rdns))


def subject_rfc4514(der: bytes) -> str:
    """The subject as cryptography's ``Name.rfc4514_string()`` prints it (Envoy's XFCC ``Subject``)."""
    fields = _tbs_fields(der)
    i = 1 if fields and fields[0][0] == 0xA0 else 0  # optional [0] version
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < i + 5:
        raise ValueError("tbsCertificate is too short")
    tag, s, e = fields[i + 4]
    if tag != _SEQUENCE:
        raise ValueError("subject: expected a Name")
    return _name_rfc4514(der, s, e)


def subject_alt_names(der: bytes) -> dict[str, tuple[str, ...]]:
    """``{"uri": ..., "dns": ..., "email": ..., "ip": ...}`` from the SAN extension (empty tuples
    when absent). Other GeneralName kinds are skipped, as cryptography's get_values_for_type does."""
    out: dict[str, list[str]] = {"uri": [], "dns": [], "email": [], "ip": []}
    for tag, s, e in _tbs_fields(der):
        if tag != _EXTENSIONS_TAG:
            continue
        es, ee = _expect(der, s, e, _SEQUENCE, "extensions")
        for xtag, xs, xe in _children(der, es, ee):
            if xtag != _SEQUENCE:
                raise ValueError("an extension is a SEQUENCE")
            os_, oe = _expect(der, xs, xe, _OID, "extension id")
            if der[os_:oe] != _SAN_OID:
                continue
            vtag, vs, ve = _tlv(der, oe, xe)
            if vtag == _BOOLEAN:  # critical
                vtag, vs, ve = _tlv(der, ve, xe)
            if vtag != _OCTET_STRING:
                raise ValueError("extension value: expected an OCTET STRING")
            gs, ge = _expect(der, vs, ve, _SEQUENCE, "GeneralNames")
            for gtag, g_s, g_e in _children(der, gs, ge):
                raw = der[g_s:g_e]
                if gtag == _GN_URI:
                    out["uri"].append(raw.decode("ascii"))
                elif gtag == _GN_DNS:
                    out["dns"].append(raw.decode("ascii"))
                elif gtag == _GN_EMAIL:
                    out["email"].append(raw.decode("ascii"))
                elif gtag == _GN_IP:
                    if len(raw) not in (4, 16):
                        raise ValueError("an iPAddress SAN is 4 or 16 bytes")
                    out["ip"].append(str(ipaddress.ip_address(raw)))
    return {k: tuple(v) for k, v in out.items()}


def pem_certificates_der(pem: bytes) -> list[bytes]:
    """The DER of every ``CERTIFICATE`` block of a PEM text, in order (ValueError when none)."""
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ValueError("no PEM CERTIFICATE block found")
    try:
        return [base64.b64decode(b"".join(block.split()), validate=True) for block in blocks]
    except binascii.Error as e:
        raise ValueError(f"bad base64 in a PEM block: {e}") from None


def der_to_pem(der: bytes) -> str:
    """One certificate as PEM text (64-character lines, trailing newline)."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
