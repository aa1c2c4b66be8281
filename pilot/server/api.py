"""pilot's apply API: Kubernetes-style paths over the ConfigStore (FastAPI router; I/O only).

Per resource (``<plural>`` as in Istio: virtualservices, destinationrules, serviceentries, ...):

- ``GET    /apis/<group>/<version>/namespaces/<ns>/<plural>``          list (``<Kind>List``)
- ``GET    /apis/<group>/<version>/<plural>``                          list, all namespaces
- ``GET    /apis/<group>/<version>/namespaces/<ns>/<plural>/<name>``   one (404 if absent)
- ``POST   /apis/<group>/<version>/namespaces/<ns>/<plural>``          create (201; 409 if it exists)
- ``PUT    /apis/<group>/<version>/namespaces/<ns>/<plural>/<name>``   create (201) or replace (200)
- ``DELETE /apis/<group>/<version>/namespaces/<ns>/<plural>/<name>``   delete (200; 404 if absent)

Bodies are YAML or JSON. Warnings come back as ``Warning: 299 - "..."`` headers (as Kubernetes does).
Bulk, for ``isthmus apply -f`` / ``isthmus delete -f`` (all-or-nothing across every document):

- ``POST /apis/isthmus.io/v1/apply``  body ``{"documents": [{"file": F, "content": YAML}]}`` (JSON) or a raw
  multi-document YAML body (``?file=NAME`` names it in messages); returns
  ``{"results": [{"resource", "action": created|configured|unchanged}], "problems": [...]}``;
  ``?namespace=NS`` is the namespace of documents that name none (default ``default``)
- ``POST /apis/isthmus.io/v1/delete`` same body; deletes every resource the documents name; returns
  ``{"results": [{"resource", "action": deleted|not found}], "problems": [...]}``

Errors: 400 for a body that is not valid YAML or does not match the URL, 422 for a resource that fails
validation, 409 for POST of an existing resource; the body is
``{"kind": "Status", "status": "Failure", "code": N, "message": ..., "problems": [Problem...]}`` and
nothing changed.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pilot.config import problems as P
from pilot.config.kinds import KINDS, Kind, by_plural
from pilot.config.parse import ParseResult, merge, parse_text
from pilot.config.store import ConfigStore
from pilot.model.config import Config, ConfigKey

BULK_GROUP = "isthmus.io"


def render(c: Config, api_version: str | None = None) -> dict[str, Any]:
    """A stored Config as the Kubernetes-style object users wrote (plus resourceVersion)."""
    meta: dict[str, Any] = {
        "name": c.name,
        "namespace": c.namespace,
        "resourceVersion": str(c.resource_version),
    }
    if c.labels:
        meta["labels"] = dict(c.labels)
    if c.annotations:
        meta["annotations"] = dict(c.annotations)
    return {
        "apiVersion": api_version or f"{c.group}/{c.version}",
        "kind": c.kind,
        "metadata": meta,
        "spec": c.spec,
    }


def _failure(code: int, message: str, problems: list[P.Problem]) -> JSONResponse:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "message": message,
        "problems": [p.to_dict() for p in problems],
    }
    return JSONResponse(body, status_code=code)


def _warning_headers(problems: list[P.Problem]) -> dict[str, str]:
    warnings = [str(p).replace('"', "'").replace("\n", " ") for p in problems if not p.is_error]
    return {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else {}


def _status_for(problems: list[P.Problem]) -> int:
    errors = [p for p in problems if p.is_error]
    if any(p.code == P.ALREADY_EXISTS for p in errors):
        return 409
    if any(p.code in (P.PARSE, P.INVALID) for p in errors):
        return 400
    return 422


def _summary(problems: list[P.Problem]) -> str:
    errors = [p for p in problems if p.is_error]
    return f"{len(errors)} error(s); nothing was changed" + (f": {errors[0]}" if errors else "")


async def _documents(request: Request) -> list[tuple[str, str]] | JSONResponse:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _failure(400, "body is not UTF-8", [P.error(P.PARSE, "body is not UTF-8")])
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        try:
            data = json.loads(text)
        except ValueError as e:
            return _failure(400, "invalid JSON", [P.error(P.PARSE, f"invalid JSON: {e}", file="request")])
        if isinstance(data, dict) and isinstance(data.get("documents"), list):
            docs = []
            for d in data["documents"]:
                if not isinstance(d, dict) or not isinstance(d.get("content"), str):
                    return _failure(
                        400,
                        "bad request",
                        [P.error(P.INVALID, 'each document must be {"file": NAME, "content": TEXT}')],
                    )
                docs.append((str(d.get("file") or "request"), d["content"]))
            return docs
    return [(request.query_params.get("file") or "request", text)]


def make_config_router(store: ConfigStore) -> APIRouter:
    router = APIRouter()

    def resolve(group: str, version: str, plural: str) -> Kind | JSONResponse:
        kind = by_plural(group, plural)
        if kind is None or version not in kind.versions:
            served = sorted(f"{k.group}/{v}/{k.plural}" for k in KINDS.values() for v in k.versions)
            msg = f"{group}/{version}/{plural} is not served; pilot serves: {', '.join(served)}"
            return _failure(404, msg, [P.error(P.UNKNOWN_KIND, msg)])
        return kind

    # ---------------------------------------------------------------- bulk (before the generic routes)

    @router.post(f"/apis/{BULK_GROUP}/v1/apply")
    async def bulk_apply(request: Request):
        docs = await _documents(request)
        if isinstance(docs, JSONResponse):
            return docs
        parsed = ParseResult()
        for file, text in docs:
            merge(parsed, parse_text(text, file, request.query_params.get("namespace")))
        if not parsed.ok:
            return _failure(_status_for(parsed.problems), _summary(parsed.problems), parsed.problems)
        before = {c.key: store.snapshot().get(*_k(c.key)) for c in parsed.configs}
        problems = parsed.problems + store.apply(parsed.configs, "api", lines=parsed.lines)
        if P.has_errors(problems):
            return _failure(_status_for(problems), _summary(problems), problems)
        after = store.snapshot()
        results = []
        for c in parsed.configs:
            old, new = before[c.key], after.get(*_k(c.key))
            action = "created" if old is None else "unchanged" if new is old else "configured"
            results.append({"resource": str(c.key), "action": action})
        return {"results": results, "problems": [p.to_dict() for p in problems]}

    @router.post(f"/apis/{BULK_GROUP}/v1/delete")
    async def bulk_delete(request: Request):
        docs = await _documents(request)
        if isinstance(docs, JSONResponse):
            return docs
        parsed = ParseResult()
        default_ns = request.query_params.get("namespace")
        for file, text in docs:
            merge(parsed, parse_text(text, file, default_ns))
        # Deleting needs only kind, namespace and name: spec problems do not matter, parse errors do.
        fatal = [p for p in parsed.problems if p.code in (P.PARSE, P.UNKNOWN_KIND)]
        if fatal:
            return _failure(_status_for(fatal), _summary(fatal), fatal)
        keys = [c.key for c in parsed.configs] + _keys_of_invalid(docs, default_ns or "default")
        keys = list(dict.fromkeys(keys))
        deleted, warnings = store.delete(keys)
        results = [{"resource": str(k), "action": "deleted" if k in deleted else "not found"} for k in keys]
        return {"results": results, "problems": [p.to_dict() for p in warnings]}

    # ---------------------------------------------------------------- per resource

    @router.get("/apis/{group}/{version}/{plural}")
    async def list_all(group: str, version: str, plural: str):
        return _list(group, version, plural, None)

    @router.get("/apis/{group}/{version}/namespaces/{ns}/{plural}")
    async def list_ns(group: str, version: str, ns: str, plural: str):
        return _list(group, version, plural, ns)

    def _list(group: str, version: str, plural: str, ns: str | None):
        kind = resolve(group, version, plural)
        if isinstance(kind, JSONResponse):
            return kind
        snap = store.snapshot()
        items = [render(c, f"{group}/{version}") for c in snap.list(kind.name, ns)]
        return {
            "apiVersion": f"{group}/{version}",
            "kind": f"{kind.name}List",
            "metadata": {"resourceVersion": str(snap.version)},
            "items": items,
        }

    @router.get("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}")
    async def get_one(group: str, version: str, ns: str, plural: str, name: str):
        kind = resolve(group, version, plural)
        if isinstance(kind, JSONResponse):
            return kind
        c = store.snapshot().get(kind.name, ns, name)
        if c is None:
            return _not_found(kind, ns, name)
        return render(c, f"{group}/{version}")

    @router.post("/apis/{group}/{version}/namespaces/{ns}/{plural}")
    async def create(group: str, version: str, ns: str, plural: str, request: Request):
        return await _write(group, version, ns, plural, None, request, create_only=True)

    @router.put("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}")
    async def replace(group: str, version: str, ns: str, plural: str, name: str, request: Request):
        return await _write(group, version, ns, plural, name, request, create_only=False)

    async def _write(group, version, ns, plural, name, request: Request, create_only: bool):
        kind = resolve(group, version, plural)
        if isinstance(kind, JSONResponse):
            return kind
        docs = await _documents(request)
        if isinstance(docs, JSONResponse):
            return docs
        file, text = docs[0]
        parsed = parse_text(text, file, default_namespace=ns)
        problems = list(parsed.problems)
        if parsed.ok and len(parsed.configs) != 1:
            problems.append(
                P.error(
                    P.INVALID, f"expected one {kind.name}, got {len(parsed.configs)} documents", file=file
                )
            )
        if P.has_errors(problems):
            return _failure(_status_for(problems), _summary(problems), problems)
        c = parsed.configs[0]
        mismatch = []
        if c.kind != kind.name:
            mismatch.append(f"body is a {c.kind}, the URL is for {kind.plural}")
        if c.namespace != ns:
            mismatch.append(f"body namespace {c.namespace!r} does not match the URL's {ns!r}")
        if name is not None and c.name != name:
            mismatch.append(f"body name {c.name!r} does not match the URL's {name!r}")
        if mismatch:
            errs = [P.error(P.INVALID, m, file=file, resource=str(c.key)) for m in mismatch]
            return _failure(400, _summary(errs), errs)
        existed = store.snapshot().get(*_k(c.key)) is not None
        problems += store.apply([c], "api", create_only=create_only, lines=parsed.lines)
        if P.has_errors(problems):
            return _failure(_status_for(problems), _summary(problems), problems)
        stored = store.snapshot().get(*_k(c.key))
        return JSONResponse(
            render(stored, f"{group}/{version}"),
            status_code=200 if existed else 201,
            headers=_warning_headers(problems),
        )

    @router.delete("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}")
    async def delete_one(group: str, version: str, ns: str, plural: str, name: str):
        kind = resolve(group, version, plural)
        if isinstance(kind, JSONResponse):
            return kind
        old = store.snapshot().get(kind.name, ns, name)
        deleted, warnings = store.delete([ConfigKey(kind.name, ns, name)])
        if not deleted:
            return _not_found(kind, ns, name)
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "details": render(old, f"{group}/{version}"),
        }
        return JSONResponse(body, headers=_warning_headers(warnings))

    return router


def _not_found(kind: Kind, ns: str, name: str) -> JSONResponse:
    resource = f"{kind.name}/{ns}/{name}"
    return _failure(404, f"{resource} not found", [P.error("NotFound", "not found", resource=resource)])


def _keys_of_invalid(docs: list[tuple[str, str]], default_ns: str) -> list[ConfigKey]:
    """Keys of documents that failed spec validation: deleting them by name must still work."""
    import yaml

    keys = []
    for _file, text in docs:
        try:
            for doc in yaml.safe_load_all(text):
                if (
                    isinstance(doc, dict)
                    and doc.get("kind") in KINDS
                    and isinstance(doc.get("metadata"), dict)
                ):
                    meta = doc["metadata"]
                    if isinstance(meta.get("name"), str):
                        keys.append(
                            ConfigKey(doc["kind"], str(meta.get("namespace") or default_ns), meta["name"])
                        )
        except yaml.YAMLError:
            continue
    return keys


def _k(key: ConfigKey) -> tuple[str, str, str]:
    return key.kind, key.namespace, key.name
