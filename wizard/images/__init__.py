"""Image migration: copy images from GHCR to Gitea with their digests preserved (issue 16).

- ``reference``: the distribution grammar for image references;
- ``manifest``: what a manifest body references (never re-serialised);
- ``client``: one registry endpoint — token auth, retries, redirects, tag pages;
- ``copier``: the copy itself — plan with GET/HEAD, then blobs, then manifests, and a report;
- ``command``: ``ghcr2gitea images``.

Nothing here imports Textual: the UI and the CLI drive ``copier.copy`` and show its ``Progress``.
The names below load on first use, so the CLI's parser does not pay for httpx.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "client": ("Credentials", "DigestMismatch", "Registry", "RegistryError", "RetryPolicy"),
    "copier": ("Copier", "CopyJob", "CopyOptions", "CopyReport", "ImageResult", "Progress", "TagResult", "copy"),
    "reference": ("Reference", "ReferenceError", "parse"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
