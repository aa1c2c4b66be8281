"""A validation finding: an error (the request is refused) or a warning (accepted, but look at it).

Every problem names the file, the resource (``kind/namespace/name``) and the field path, so a user can
find the line to fix. ``str(problem)`` is the one-line form the CLI prints and pilot logs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"

# Codes. Where istioctl analyze has a matching message, its code is given in the comment.
PARSE = "ParseError"  # invalid YAML or a document that is not an object
SCHEMA = "SchemaError"  # unknown field, wrong type, bad enum value, missing required field
UNSUPPORTED = "NotSupported"  # a field Istio defines that Isthmus does not implement yet
UNKNOWN_KIND = "UnknownKind"
INVALID_REGEX = "InvalidRegex"
WEIGHTS = "InvalidWeights"
SUBSET_NOT_FOUND = "ReferencedResourceNotFound"  # IST0101 (subset / gateway)
UNKNOWN_HOST = "UnknownHost"  # IST0101 for a destination host
CONFLICTING_HOSTS = "ConflictingMeshGatewayVirtualServiceHosts"  # IST0109
NOT_TRANSLATED = "NotTranslatedYet"  # accepted and validated; a later issue translates it
ALREADY_EXISTS = "AlreadyExists"
DUPLICATE = "DuplicateResource"  # one resource twice in one request, or in two files of --config-dir
INVALID = "InvalidRequest"  # e.g. the body's namespace disagrees with the URL


@dataclass(frozen=True)
class Problem:
    level: str  # ERROR or WARNING
    code: str
    message: str
    file: str = ""
    resource: str = ""  # "VirtualService/default/reviews"
    path: str = ""  # "spec.http[0].route[1].destination.subset"
    line: int | None = None  # 1-based line in `file`, when known

    @property
    def is_error(self) -> bool:
        return self.level == ERROR

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.resource:
            parts.append(self.resource)
        if self.path:
            parts.append(self.path)
        return f"{self.level}: {': '.join(parts)}: {self.message} [{self.code}]"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["text"] = str(self)
        return d


def has_errors(problems: list[Problem]) -> bool:
    return any(p.is_error for p in problems)


def error(code: str, message: str, **where) -> Problem:
    return Problem(ERROR, code, message, **where)


def warning(code: str, message: str, **where) -> Problem:
    return Problem(WARNING, code, message, **where)
