"""Reading manifests without rewriting them: what a body references, never a re-serialisation.

The four media types a copy accepts (OCI manifest and index, Docker v2 manifest and list) are the
ones ``authflow.MANIFEST_TYPES`` sends. A copy pushes the very bytes it fetched with the very
Content-Type, so the digest is preserved (containers/image ``PreserveDigests``); this module only
reads the JSON to learn which blobs and child manifests must exist first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPTED = INDEX_TYPES | IMAGE_TYPES


class ManifestError(ValueError):
    """A manifest this copy cannot take as it is (unknown media type, not JSON, schema 1)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""  # os/arch[/variant] of an index entry; "unknown/unknown" for buildx attestations


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str
    blobs: tuple[Descriptor, ...] = ()  # config + layers (image manifests)
    children: tuple[Descriptor, ...] = ()  # manifests (indexes)
    subject: str | None = None  # OCI 1.1 ``subject``: this manifest refers to that digest

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _descriptor(d: dict, where: str) -> Descriptor:
    try:
        digest, size = d["digest"], int(d["size"])
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"{where}: a descriptor without digest and size") from None
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ManifestError(f"{where}: only sha256 digests are copied, got {str(digest)[:20]!r}")
    plat = d.get("platform") if isinstance(d.get("platform"), dict) else {}
    platform = "/".join(str(plat[k]) for k in ("os", "architecture", "variant") if plat.get(k))
    return Descriptor(str(d.get("mediaType", "")), digest, size, platform)


def parse(body: bytes, media_type: str, digest: str, where: str = "manifest") -> Manifest:
    """The references of a manifest body; ``media_type`` is the Content-Type it was served with
    (falling back to the body's own ``mediaType`` when the registry sent a generic one)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ManifestError(f"{where}: not JSON") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object")
    mt = media_type if media_type in ACCEPTED else str(data.get("mediaType") or "")
    if mt not in ACCEPTED:
        if data.get("schemaVersion") == 1:
            raise ManifestError(f"{where}: Docker schema 1 manifests are not copied (Gitea refuses them); rebuild "
                                "the image")
        if "manifests" in data:
            mt = OCI_INDEX
        elif "layers" in data:
            mt = OCI_MANIFEST
        else:
            raise ManifestError(f"{where}: media type {media_type or '(none)'} is not an image manifest or index")
    subject = data.get("subject", {}).get("digest") if isinstance(data.get("subject"), dict) else None
    if mt in INDEX_TYPES:
        children = tuple(_descriptor(d, where) for d in data.get("manifests") or [])
        return Manifest(body, mt, digest, children=children, subject=subject)
    blobs = []
    if isinstance(data.get("config"), dict):
        blobs.append(_descriptor(data["config"], where))
    blobs += [_descriptor(d, where) for d in data.get("layers") or [] if isinstance(d, dict)]
    return Manifest(body, mt, digest, blobs=tuple(blobs), subject=subject)


def fallback_tags(digest: str) -> tuple[str, ...]:
    """The tags that stand in for the referrers API (cosign, regsync ``digestTags``)."""
    base = digest.replace(":", "-")
    return (base, f"{base}.sig", f"{base}.att", f"{base}.sbom")


__all__ = ["Manifest", "Descriptor", "ManifestError", "parse", "sha256_digest", "fallback_tags", "INDEX_TYPES",
           "IMAGE_TYPES", "OCI_MANIFEST", "OCI_INDEX", "DOCKER_MANIFEST", "DOCKER_LIST"]
