"""The registry's ``Www-Authenticate`` challenges and the manifest types a client accepts.

Shared by the auth-flow probe (``authflow``) and the image copy (``images.client``); kept apart from
both so the copy does not import the probe's TLS inspection and diagnosis catalogue.
"""

from __future__ import annotations

import re

import httpx

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenges(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every challenge of every Www-Authenticate header: [("Bearer", {realm, service, scope}), ("Basic", {...})]."""
    out: list[tuple[str, dict[str, str]]] = []
    for value in values:
        # one header may carry several challenges: a new one starts at "<scheme> " after a comma
        for part in re.split(r",\s*(?=[A-Za-z][A-Za-z0-9_-]*\s+[A-Za-z0-9_-]+\s*=)", value.strip()):
            part = part.strip()
            if not part:
                continue
            scheme, _, rest = part.partition(" ")
            params = {}
            for m in _PARAM.finditer(rest):
                params[m.group(1).lower()] = m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
            out.append((scheme, params))
    return out


def bearer_challenge(resp: httpx.Response) -> dict[str, str] | None:
    for scheme, params in parse_challenges(resp.headers.get_list("www-authenticate")):
        if scheme.lower() == "bearer":
            return params
    return None
