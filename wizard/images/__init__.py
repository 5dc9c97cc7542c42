"""Image migration: copy images from GHCR to Gitea with their digests preserved (issue 16).

- ``reference``: the distribution grammar for image references;
- ``manifest``: what a manifest body references (never re-serialised);
- ``client``: one registry endpoint — token auth, retries, redirects, tag pages;
- ``copier``: the copy itself — plan with GET/HEAD, then blobs, then manifests, and a report.

Nothing here imports Textual: the UI and the CLI drive ``copier.copy`` and show its ``Progress``.
"""

from .client import Credentials, DigestMismatch, Registry, RegistryError, RetryPolicy
from .copier import Copier, CopyJob, CopyOptions, CopyReport, ImageResult, Progress, TagResult, copy
from .reference import Reference, ReferenceError, parse

__all__ = ["Credentials", "DigestMismatch", "Registry", "RegistryError", "RetryPolicy", "Copier", "CopyJob",
           "CopyOptions", "CopyReport", "ImageResult", "Progress", "TagResult", "copy", "Reference",
           "ReferenceError", "parse"]
