"""The four PATCH flavours of the Kubernetes API, and server-side apply's field ownership."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

ListInfo = Callable[[tuple[str, ...]], tuple[str | None, str]]


class PatchError(Exception):
    """A patch that cannot be applied (422/400 in the API)."""


# ---------------------------------------------------------------- JSON merge patch (RFC 7386)
def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# ---------------------------------------------------------------- JSON patch (RFC 6902)
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise KeyError(p)
    return doc


def json_patch(doc, ops: list[dict]):
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        try:
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise PatchError(f"testing value {op.get('path')} failed")
                continue
            if kind in ("move", "copy"):
                src = _pointer(op["from"])
                value = copy.deepcopy(_walk(doc, src))
                if kind == "move":
                    parent = _walk(doc, src[:-1])
                    if isinstance(parent, list):
                        parent.pop(int(src[-1]))
                    else:
                        del parent[src[-1]]
                kind, op = "add", {"value": value}
            if not parts:
                if kind in ("add", "replace"):
                    doc = copy.deepcopy(op["value"])
                    continue
                raise PatchError("cannot remove the whole document")
            parent = _walk(doc, parts[:-1])
            last = parts[-1]
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    if idx > len(parent):
                        raise PatchError(f"index {idx} out of range")
                    parent.insert(idx, copy.deepcopy(op["value"]))
                elif kind == "remove":
                    parent.pop(idx)
                elif kind == "replace":
                    parent[idx] = copy.deepcopy(op["value"])
                else:
                    raise PatchError(f"unknown op {kind!r}")
            elif isinstance(parent, dict):
                if kind == "add":
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "remove":
                    del parent[last]
                elif kind == "replace":
                    if last not in parent:
                        raise PatchError(f"replace operation does not apply: doc is missing key: {op.get('path')}")
                    parent[last] = copy.deepcopy(op["value"])
                else:
                    raise PatchError(f"unknown op {kind!r}")
            else:
                raise PatchError(f"cannot address {op.get('path')}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise PatchError(f"doc is missing path: {op.get('path')}: {e}") from None
    return doc


# ---------------------------------------------------------------- strategic merge patch
def strategic_merge(target, patch, info: ListInfo, path: tuple[str, ...] = ()):
    """Kubernetes strategic merge: lists with a patch merge key merge item by item."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or [] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
            continue
        sub = path + (k,)
        if isinstance(v, dict) and v.get("$patch") == "replace":
            result[k] = {kk: vv for kk, vv in v.items() if kk != "$patch"}
        elif isinstance(v, dict) and v.get("$patch") == "delete":
            result.pop(k, None)
        elif isinstance(v, list):
            result[k] = _merge_list(result.get(k), v, info, sub)
        elif isinstance(v, dict):
            result[k] = strategic_merge(result.get(k), v, info, sub)
        else:
            result[k] = copy.deepcopy(v)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current, patch_list: list, info: ListInfo, path):
    key, strategy = info(path)
    current = list(current or [])
    if strategy == "map" and key and all(isinstance(x, dict) for x in patch_list):
        if any(x.get("$patch") == "replace" for x in patch_list):
            return [copy.deepcopy(x) for x in patch_list if x.get("$patch") != "replace"]
        out = [copy.deepcopy(x) for x in current]
        for item in patch_list:
            kv = item.get(key)
            idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == kv), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    out.pop(idx)
                continue
            if idx is None:
                out.append(strategic_merge({}, item, info, path))
            else:
                out[idx] = strategic_merge(out[idx], item, info, path)
        return out
    if strategy == "set":
        out = list(current)
        for x in patch_list:
            if x not in out:
                out.append(copy.deepcopy(x))
        return out
    return copy.deepcopy(patch_list)


# ---------------------------------------------------------------- server-side apply
# A field path is a tuple of segments: plain keys, or ("k", json-of-key) for list-map items,
# or ("v", json-of-value) for set items. Atomic lists are leaves.

def field_set(obj, info: ListInfo, path: tuple = (), schema_path: tuple[str, ...] = ()) -> set[tuple]:
    out: set[tuple] = set()
    if isinstance(obj, dict):
        if not obj and path:
            out.add(path)
        for k, v in obj.items():
            out |= field_set(v, info, path + (k,), schema_path + (k,))
    elif isinstance(obj, list):
        key, strategy = info(schema_path)
        if strategy == "map" and key and all(isinstance(x, dict) and key in x for x in obj):
            for item in obj:
                ipath = path + (("k", json.dumps({key: item[key]}, sort_keys=True)),)
                out.add(ipath)
                out |= field_set(item, info, ipath, schema_path)
        elif strategy == "set":
            for item in obj:
                out.add(path + (("v", json.dumps(item, sort_keys=True)),))
        else:
            out.add(path)
    else:
        out.add(path)
    return out


def get_path(obj, path: tuple):
    """Value at a field path, or a sentinel KeyError when absent."""
    for seg in path:
        if isinstance(seg, tuple):
            kind, j = seg
            if not isinstance(obj, list):
                raise KeyError(seg)
            want = json.loads(j)
            if kind == "k":
                (k, kv), = want.items()
                obj = next((x for x in obj if isinstance(x, dict) and x.get(k) == kv), _MISSING)
            else:
                obj = want if want in obj else _MISSING
            if obj is _MISSING:
                raise KeyError(seg)
        else:
            if not isinstance(obj, dict) or seg not in obj:
                raise KeyError(seg)
            obj = obj[seg]
    return obj


_MISSING = object()


def remove_path(obj, path: tuple) -> None:
    """Remove the field at path (and list items for k/v segments); missing is fine."""
    if not path:
        return
    try:
        parent = get_path(obj, path[:-1])
    except KeyError:
        return
    seg = path[-1]
    if isinstance(seg, tuple):
        kind, j = seg
        want = json.loads(j)
        if isinstance(parent, list):
            if kind == "k":
                (k, kv), = want.items()
                parent[:] = [x for x in parent if not (isinstance(x, dict) and x.get(k) == kv)]
            else:
                parent[:] = [x for x in parent if x != want]
    elif isinstance(parent, dict):
        parent.pop(seg, None)


def apply_merge(live, config, info: ListInfo, path: tuple[str, ...] = ()):
    """Merge an applied configuration into the live object (list-maps merged by key)."""
    if not isinstance(config, dict):
        return copy.deepcopy(config)
    result = dict(live) if isinstance(live, dict) else {}
    for k, v in config.items():
        sub = path + (k,)
        if isinstance(v, dict):
            result[k] = apply_merge(result.get(k), v, info, sub)
        elif isinstance(v, list):
            key, strategy = info(sub)
            cur = result.get(k) if isinstance(result.get(k), list) else []
            if strategy == "map" and key and all(isinstance(x, dict) for x in v):
                out = [copy.deepcopy(x) for x in cur]
                for item in v:
                    idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item.get(key)), None)
                    if idx is None:
                        out.append(apply_merge({}, item, info, sub))
                    else:
                        out[idx] = apply_merge(out[idx], item, info, sub)
                result[k] = out
            elif strategy == "set":
                result[k] = list(cur) + [copy.deepcopy(x) for x in v if x not in cur]
            else:
                result[k] = copy.deepcopy(v)
        else:
            result[k] = copy.deepcopy(v)
    return result


def fields_v1(paths: set[tuple]) -> dict:
    """Render a field set in the API's FieldsV1 JSON form."""
    root: dict = {}
    leaves = []
    for p in sorted(paths, key=lambda t: [str(s) for s in t]):
        node = root
        for seg in p:
            name = f"{seg[0]}:{seg[1]}" if isinstance(seg, tuple) else f"f:{seg}"
            node = node.setdefault(name, {})
        leaves.append(node)
    for node in leaves:  # a field owned in itself and through children carries "."
        if node and "." not in node:
            node["."] = {}
    return root


def parse_fields_v1(fv1: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for name, sub in (fv1 or {}).items():
        if name == ".":
            continue
        kind, _, rest = name.partition(":")
        seg = rest if kind == "f" else (kind, rest)
        path = prefix + (seg,)
        if not sub:
            out.add(path)
        else:
            children = parse_fields_v1(sub, path)
            if "." in sub or not children:
                out.add(path)
            out |= children
    return out
