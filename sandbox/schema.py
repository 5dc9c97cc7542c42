"""Object schemas from kubernetes-validate: validation (422 Invalid) and list merge keys.

kubernetes-validate re-reads its JSON files on every call (~14 ms); the API server validates
every write, so validators are built once per kind and kept.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from importlib import resources

import jsonschema
from referencing import Registry, Resource

SCHEMA_VERSION = "1.33.0"


def _schema_dir(strict: bool):
    name = f"v{SCHEMA_VERSION}-local" + ("-strict" if strict else "")
    return resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", name)


@cache
def _definitions(strict: bool) -> dict:
    return json.loads(_schema_dir(strict).joinpath("_definitions.json").read_text())


def _file_for(api_version: str, kind: str) -> str:
    gv = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{gv}.json"


@lru_cache(maxsize=64)
def _validator(api_version: str, kind: str, strict: bool):
    path = _schema_dir(strict).joinpath(_file_for(api_version, kind))
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(_definitions(strict)) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(obj: dict, strict: bool = False) -> list[str]:
    """Return human-readable problems ("spec.replicas: 'x' is not of type 'integer'"), empty when valid."""
    try:
        v = _validator(obj["apiVersion"], obj["kind"], strict)
    except (FileNotFoundError, KeyError):
        return []
    errors = []
    for err in sorted(v.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path).replace(".[", "[")
        errors.append(f"{path or '<root>'}: {err.message}")
        if len(errors) >= 5:
            break
    return errors


@cache
def _top_schema(api_version: str, kind: str) -> dict | None:
    try:
        return json.loads(_schema_dir(False).joinpath(_file_for(api_version, kind)).read_text())
    except FileNotFoundError:
        return None


def _deref(node: dict) -> dict:
    defs = _definitions(False)["$defs"]
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 10:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
        seen += 1
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node, dict) and key in node and "properties" not in node:
            for sub in node[key]:
                sub = _deref(sub)
                if isinstance(sub, dict) and ("properties" in sub or "items" in sub):
                    return sub
    return node


@lru_cache(maxsize=4096)
def list_info(api_version: str, kind: str, path: tuple[str, ...]) -> tuple[str | None, str]:
    """For the list at ``path`` (dict keys only), return (merge key or None, strategy).

    strategy is "map" (merge by key), "set" (merge scalars) or "atomic" (replace whole).
    """
    node = _top_schema(api_version, kind)
    if node is None:
        return None, "atomic"
    for part in path:
        node = _deref(node)
        if not isinstance(node, dict):
            return None, "atomic"
        if "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        elif "items" in node:  # a path crossing a list element
            node = _deref(node["items"])
            if "properties" in node and part in node["properties"]:
                node = node["properties"][part]
            else:
                return None, "atomic"
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None, "atomic"
    node = node if isinstance(node, dict) else {}
    key = node.get("x-kubernetes-patch-merge-key")
    list_type = node.get("x-kubernetes-list-type")
    if key:
        return key, "map"
    map_keys = node.get("x-kubernetes-list-map-keys")
    if map_keys:
        return map_keys[0], "map"
    if list_type == "set" or "merge" in (node.get("x-kubernetes-patch-strategy") or ""):
        return None, "set"
    return None, "atomic"
