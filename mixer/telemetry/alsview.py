"""A lean reading of ``StreamAccessLogsMessage`` for mixer's ingest: the same wire format, fewer types.

grpc parses every incoming message before mixer sees it. Parsed as Envoy's own message, each HTTP entry
builds Istio's label Struct (nested maps, ~70% of an entry's bytes) and every field mixer never reads
(addresses, times, request ids, paths, TLS properties): ~4 µs per entry of the proxy's, and mixer then
serialised the Struct again to key its label cache. This module declares, from the generated descriptors
(names, numbers and types copied, never typed here), a message with the same field numbers where an HTTP
entry keeps only what Istio's labels and values are made of, and ``common_properties.metadata``,
``.response_flags`` and ``response.response_code`` (a UInt32Value) are raw ``bytes``. Protobuf's wire
format makes that a valid reading of the same bytes; every other field is kept as unknown bytes, so
``full_http_entry`` gives back Envoy's ``HTTPAccessLogEntry`` (for the reference label code on a cache
miss and for the JSON access log), exactly but for the presence of an empty metadata, response-flags or
response-code message, which no label reads (an absent code and a present 0 are both ``"0"``). Identifier
and TCP entries are Envoy's own types.
"""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "isthmus.mixer.alsview"
_KEPT = "kept"  # the field as Envoy declares it
_BYTES = "bytes"  # a sub-message read as its raw bytes


def _file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="isthmus/mixer/alsview.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[
            als_pb2.DESCRIPTOR.name,
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
        ],
    )

    def message(name: str, real, fields: dict[str, str]) -> None:
        out = fdp.message_type.add(name=name)
        for field_name, how in fields.items():
            field = real.DESCRIPTOR.fields_by_name[field_name]
            label = _F.LABEL_REPEATED if field.is_repeated else _F.LABEL_OPTIONAL
            f = out.field.add(name=field_name, number=field.number, label=label)
            if how == _BYTES:
                f.type = _F.TYPE_BYTES
                continue
            f.type = field.type
            if field.message_type is None:
                continue
            if how != _KEPT:  # one of this file's messages
                f.type_name = f".{_PACKAGE}.{how}"
            elif field.message_type.GetOptions().map_entry:
                field.message_type.CopyToProto(out.nested_type.add())
                f.type_name = f".{_PACKAGE}.{name}.{field.message_type.name}"
            else:
                f.type_name = "." + field.message_type.full_name

    message(
        "Message",
        als_pb2.StreamAccessLogsMessage,
        {"identifier": _KEPT, "http_logs": "HttpLogs", "tcp_logs": _KEPT},
    )
    message("HttpLogs", als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries, {"log_entry": "HttpEntry"})
    message(
        "HttpEntry",
        accesslog_pb2.HTTPAccessLogEntry,
        {"common_properties": "Common", "request": "Request", "response": "Response"},
    )
    message(
        "Common",
        accesslog_pb2.AccessLogCommon,
        {
            "metadata": _BYTES,
            "upstream_cluster": _KEPT,
            "response_flags": _BYTES,
            "duration": _KEPT,
            "time_to_last_downstream_tx_byte": _KEPT,
        },
    )
    message(
        "Request",
        accesslog_pb2.HTTPRequestProperties,
        {
            "authority": _KEPT,
            "request_headers": _KEPT,
            "request_headers_bytes": _KEPT,
            "request_body_bytes": _KEPT,
        },
    )
    message(
        "Response",
        accesslog_pb2.HTTPResponseProperties,
        {"response_code": _BYTES, "response_headers_bytes": _KEPT, "response_body_bytes": _KEPT},
    )
    return fdp


def _classes():
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("isthmus/mixer/alsview.proto")
    except KeyError:
        pool.Add(_file())
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Message", "HttpEntry")
    )


StreamAccessLogsView, HttpEntryView = _classes()


def full_http_entry(entry) -> accesslog_pb2.HTTPAccessLogEntry:
    """The view of an entry -> Envoy's HTTPAccessLogEntry, every field (the unknown ones kept)."""
    return accesslog_pb2.HTTPAccessLogEntry.FromString(entry.SerializeToString())


def view_http_entry(entry: accesslog_pb2.HTTPAccessLogEntry):
    """Envoy's entry -> its view (tests, tools)."""
    return HttpEntryView.FromString(entry.SerializeToString())
