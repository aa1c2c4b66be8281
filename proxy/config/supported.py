"""Reject configuration fields we do not implement, by path, instead of silently ignoring them.

Each config consumer declares what it implements as a *spec*:

    SPEC = {"name": True, "cluster": True, "timeout": True,
            "retry_policy": {"retry_on": True, "num_retries": True}}

``True`` accepts the field and everything inside it; a nested dict is checked recursively (for
repeated message fields, against every element). ``reject_unsupported(msg, SPEC, path)`` raises a
ConfigError naming the first field that is set but not in the spec. ``typed_config`` (an ``Any``) is
not descended into: the factory that unpacks it checks its own payload.
"""

from __future__ import annotations

from google.protobuf.message import Message

from proxy.config.errors import ConfigError

Spec = dict[str, "bool | Spec"]


def reject_unsupported(msg: Message, spec: Spec, path: str = "") -> None:
    for field, value in msg.ListFields():
        name = field.name
        here = f"{path}.{name}" if path else name
        sub = spec.get(name)
        if sub is None or sub is False:
            raise ConfigError(
                here, f"field '{name}' of {msg.DESCRIPTOR.full_name} is not supported by Isthmus yet"
            )
        if sub is True:
            continue
        if field.message_type is None:
            continue
        if field.is_repeated:  # protobuf 7 removed FieldDescriptor.label
            if field.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(value):
                reject_unsupported(item, sub, f"{here}[{i}]")
        else:
            reject_unsupported(value, sub, here)
