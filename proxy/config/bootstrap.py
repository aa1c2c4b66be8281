"""Load an Envoy v3 Bootstrap from YAML or JSON, merge ``--config-yaml`` over it, parse it into the
real protobuf and reject what Isthmus does not implement, always naming the field path."""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.config.registry import BUILTIN_EXTENSION_MODULES
from proxy.config.supported import reject_unsupported

log = logging.getLogger("proxy.config")

# Proto modules of every typed_config payload we support. json_format resolves an Any only when the
# payload's module is imported, so these are imported before any parse (even if an extension's
# implementation module has not landed yet).
EXTENSION_PROTO_MODULES = [
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
]

# What Isthmus implements at the Bootstrap level. Listeners and clusters are checked, field by field,
# by the listener manager and the cluster manager that consume them.
BOOTSTRAP_SPEC = {
    "node": {
        "id": True,
        "cluster": True,
        "metadata": True,
        "locality": True,
        "user_agent_name": True,
        "user_agent_version": True,
    },
    # secrets: checked by proxy.tls.secrets.SecretManager
    "static_resources": {"listeners": True, "clusters": True, "secrets": True},
    "dynamic_resources": True,  # checked by proxy.xds.config.ads_config_from_bootstrap
    "admin": {
        "address": {"socket_address": {"address": True, "port_value": True, "protocol": True}},
        "access_log": True,
        "access_log_path": True,
    },
}

_loaded = False


def load_extensions() -> None:
    """Import the proto modules and every extension module that exists so far (idempotent)."""
    global _loaded
    if _loaded:
        return
    for mod in EXTENSION_PROTO_MODULES:
        importlib.import_module(mod)
    for mod in BUILTIN_EXTENSION_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            # Only tolerate the extension module itself being absent (not yet implemented); a
            # missing dependency inside an existing module is a real error.
            if e.name is None or not mod.startswith(e.name):
                raise
            log.debug("extension module %s not available", mod)
    _loaded = True


def read_config_text(text: str, hint: str = "") -> dict:
    """YAML or JSON (JSON is YAML, but a .json file gets the stricter JSON parser's errors)."""
    try:
        if hint.endswith(".json"):
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError("", f"cannot parse {hint or 'configuration'}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{hint or 'configuration'}: the top level must be a mapping (a Bootstrap)")
    return data


_AT = re.compile(r'at "?Bootstrap\.?([^"\s]*?)"?\.*(?:\s|$)')
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_FAILED = re.compile(r"Failed to parse (\w+) field")
_TYPE_URL = re.compile(r"Can not find message descriptor by type_url: (\S+?) at")


def _repair_path(names: list[str]) -> str:
    """protobuf's nested "Failed to parse X field" chain skips some levels (oneof members such as
    ``socket_address``); walk the Bootstrap descriptor to put them back."""
    desc = bootstrap_pb2.Bootstrap.DESCRIPTOR
    out: list[str] = []
    for name in names:
        if desc is None:
            out.append(name)
            continue
        field = desc.fields_by_name.get(name)
        if field is None:
            for child in desc.fields:
                if child.message_type is not None and name in child.message_type.fields_by_name:
                    out.append(child.name)
                    field = child.message_type.fields_by_name[name]
                    break
        out.append(name)
        desc = field.message_type if field is not None else None
    return ".".join(out)


def _parse_error(err: Exception) -> ConfigError:
    text = str(err).split("\n")[0]
    m = _AT.search(text)
    if m:
        path = m.group(1).rstrip(".")
    else:
        path = _repair_path(_FAILED.findall(text))
    nf = _NO_FIELD.search(text)
    if nf:
        path = f"{path}.{nf.group(1)}" if path else nf.group(1)
        return ConfigError(path, f"unknown field '{nf.group(1)}'")
    tu = _TYPE_URL.search(text)
    if tu:
        return ConfigError(path, f"typed_config type '{tu.group(1)}' is unknown or not supported by Isthmus")
    detail = re.sub(r"\s+at \"?Bootstrap\S*$", "", text.rsplit("field: ", 1)[-1]).rstrip(".")
    return ConfigError(path, detail)


def parse_bootstrap_dict(data: dict) -> bootstrap_pb2.Bootstrap:
    load_extensions()
    msg = bootstrap_pb2.Bootstrap()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as e:
        raise _parse_error(e) from None
    return msg


def check_supported(bootstrap: bootstrap_pb2.Bootstrap) -> None:
    reject_unsupported(bootstrap, BOOTSTRAP_SPEC, "")
    if bootstrap.HasField("dynamic_resources"):
        # ADS only (SotW or Delta gRPC to a static cluster), lds_config/cds_config as `ads: {}`;
        # REST, path-based and non-ADS config sources are reported by field path.
        from proxy.xds.config import ads_config_from_bootstrap

        ads_config_from_bootstrap(bootstrap)


def load_bootstrap(
    config_path: str = "", config_yaml: str = "", service_node: str = "", service_cluster: str = ""
) -> bootstrap_pb2.Bootstrap:
    """Envoy's order: parse the file, parse --config-yaml, proto-merge the second over the first
    (scalars replaced, messages merged, repeated fields appended), then apply --service-* flags."""
    bootstrap = bootstrap_pb2.Bootstrap()
    if config_path:
        p = Path(config_path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError("", f"cannot read configuration '{config_path}': {e.strerror or e}") from None
        bootstrap.MergeFrom(parse_bootstrap_dict(read_config_text(text, p.name)))
    if config_yaml:
        bootstrap.MergeFrom(parse_bootstrap_dict(read_config_text(config_yaml, "--config-yaml")))
    if service_node:
        bootstrap.node.id = service_node
    if service_cluster:
        bootstrap.node.cluster = service_cluster
    check_supported(bootstrap)
    return bootstrap
