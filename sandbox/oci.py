"""Image content for the simulated registries: media types, deterministic images, and what a manifest references.

GHCR (``ghcr.py``) serves the images built here; Gitea (``gitea.py``) validates pushes with
``references``. The bytes are generated from a seed, so two sandboxes hold the same digests,
and are small by default so tests stay fast (``layer_size`` makes the shared layer large).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN = "application/vnd.dev.cosign.simplesigning.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def generate(seed: str, size: int) -> bytes:
    """``size`` deterministic bytes for ``seed`` (a 64 KiB block repeated: fast even for hundreds of MiB)."""
    block = hashlib.shake_256(seed.encode()).digest(min(size, 1 << 16) or 1)
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Content:
    """Manifests and blobs of one or more images, ready to be stored: digest → (media type, bytes)."""

    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def manifest(self, media_type: str, doc: dict) -> tuple[str, int]:
        body = json.dumps(doc, indent=3).encode()  # registries keep the pusher's bytes, whitespace included
        digest = sha256(body)
        self.manifests[digest] = (media_type, body)
        return digest, len(body)

    def image(self, name: str, layers: list[bytes], *, oci: bool, arch: str = "amd64") -> tuple[str, int]:
        """One image manifest over ``layers``; returns (digest, size)."""
        diff_ids = [sha256(b) for b in layers]
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"name": name}},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
        layer_type = OCI_LAYER if oci else DOCKER_LAYER
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
               "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": len(config),
                          "digest": self.blob(config)},
               "layers": [{"mediaType": layer_type, "size": len(b), "digest": self.blob(b)} for b in layers]}
        return self.manifest(doc["mediaType"], doc)

    def attestation(self, subject: str, name: str) -> tuple[str, int]:
        """A buildx attestation manifest (in-toto provenance) for the image ``subject``."""
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": [
            {"name": name, "digest": {"sha256": subject.split(":", 1)[1]}}],
            "predicateType": "https://slsa.dev/provenance/v0.2", "predicate": {"builder": {"id": "sandbox"}}},
            sort_keys=True).encode()
        config = b'{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": self.blob(config)},
               "layers": [{"mediaType": IN_TOTO, "size": len(statement), "digest": self.blob(statement),
                           "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]}
        return self.manifest(OCI_MANIFEST, doc)

    def signature(self, subject: str, reference: str) -> tuple[str, int]:
        """A cosign signature manifest for ``subject``, the kind stored under the tag ``sha256-HEX.sig``."""
        payload = json.dumps({"critical": {"identity": {"docker-reference": reference},
                                           "image": {"docker-manifest-digest": subject},
                                           "type": "cosign container image signature"}, "optional": None},
                             sort_keys=True).encode()
        config = json.dumps({"architecture": "", "os": "", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]}}, sort_keys=True).encode()
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": self.blob(config)},
               "layers": [{"mediaType": COSIGN, "size": len(payload), "digest": self.blob(payload),
                           "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ-sandbox-not-a-real-signature"}}]}
        return self.manifest(OCI_MANIFEST, doc)

    def index(self, entries: list[tuple[str, int, str, dict, dict | None]], *, oci: bool) -> tuple[str, int]:
        """An index (OCI) or manifest list (Docker) of (digest, size, media type, platform, annotations)."""
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_LIST, "manifests": [
            {"mediaType": mt, "digest": d, "size": s, "platform": p, **({"annotations": a} if a else {})}
            for d, s, mt, p, a in entries]}
        return self.manifest(doc["mediaType"], doc)


def references(media_type: str, body: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """(blob digests, [(child manifest digest, its media type)]) a manifest names; ValueError if unreadable."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ValueError("not a schema 2 manifest")
    if media_type in INDEX_TYPES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise ValueError("an index needs manifests")
        return [], [(str(m.get("digest", "")), str(m.get("mediaType", ""))) for m in children]
    config, layers = doc.get("config"), doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ValueError("a manifest needs config and layers")
    return [str(config.get("digest", ""))] + [str(x.get("digest", "")) for x in layers], []


@dataclass
class Repo:
    """One image (repository) of a registry: tags, manifests and the blobs scoped to it."""

    tags: dict[str, str] = field(default_factory=dict)  # tag → manifest digest
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def closure(self, digest: str) -> Content:
        """The manifest ``digest`` with every child manifest and blob it needs."""
        out = Content()
        media_type, body = self.manifests[digest]
        out.manifests[digest] = (media_type, body)
        blobs, children = references(media_type, body)
        for d in blobs:
            out.blobs[d] = self.blobs[d]
        for d, _ in children:
            sub = self.closure(d)
            out.manifests.update(sub.manifests)
            out.blobs.update(sub.blobs)
        return out


AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}
UNKNOWN = {"architecture": "unknown", "os": "unknown"}


def default_images(org: str, *, layer_size: int = 256 * 1024, small_size: int = 2048,
                   extra_tags: int = 12) -> dict[str, dict[str, Content | str]]:
    """The GHCR world: repo → {tag: Content (a new manifest) or another tag's name (same digest)}.

    - ``github-workflow-agents:latest``: a Docker v2 manifest; ``v1.0.0`` … tags for pagination;
    - ``gwa-orchestrator:latest``: an OCI index, linux/amd64 + linux/arm64, each with a buildx
      attestation entry (``unknown/unknown``);
    - ``gwa-webhook:latest``: an OCI manifest, signed (cosign's fallback tag ``sha256-HEX.sig``);
      ``gwa-webhook:legacy``: a Docker manifest list.
    Every linux/amd64 image shares one base layer of ``layer_size`` bytes.
    """
    base = generate("sandbox base layer", layer_size)
    base_arm = generate("sandbox base layer arm64", layer_size)

    def app(name: str) -> bytes:
        return generate(f"{org}/{name} app layer", small_size)

    out: dict[str, dict[str, Content | str]] = {}
    agents = Content()
    agents.image(f"{org}/github-workflow-agents", [base, app("github-workflow-agents")], oci=False)
    out["github-workflow-agents"] = {"latest": agents}
    for i in range(extra_tags):
        if i == extra_tags - 1:
            out["github-workflow-agents"][f"v1.0.{i}"] = "latest"
        else:
            c = Content()
            c.image(f"{org}/github-workflow-agents", [base, generate(f"agents v1.0.{i}", small_size)], oci=False)
            out["github-workflow-agents"][f"v1.0.{i}"] = c

    orch = Content()
    name = f"ghcr.io/{org}/gwa-orchestrator"
    amd = orch.image(name, [base, app("gwa-orchestrator")], oci=True)
    arm = orch.image(name, [base_arm, app("gwa-orchestrator arm64")], oci=True, arch="arm64")
    entries = [(amd[0], amd[1], OCI_MANIFEST, AMD64, None), (arm[0], arm[1], OCI_MANIFEST, ARM64, None)]
    for subject, _size, *_ in list(entries):
        att = orch.attestation(subject, name)
        entries.append((att[0], att[1], OCI_MANIFEST, UNKNOWN, {
            "vnd.docker.reference.digest": subject, "vnd.docker.reference.type": "attestation-manifest"}))
    orch.index(entries, oci=True)
    out["gwa-orchestrator"] = {"latest": orch}

    hook = Content()
    hook_digest, _ = hook.image(f"{org}/gwa-webhook", [base, app("gwa-webhook")], oci=True)
    sig = Content()
    sig.signature(hook_digest, f"ghcr.io/{org}/gwa-webhook")
    legacy = Content()
    a = legacy.image(f"{org}/gwa-webhook", [base, app("gwa-webhook legacy")], oci=False)
    b = legacy.image(f"{org}/gwa-webhook", [base_arm, app("gwa-webhook legacy arm64")], oci=False, arch="arm64")
    legacy.index([(a[0], a[1], DOCKER_MANIFEST, AMD64, None), (b[0], b[1], DOCKER_MANIFEST, ARM64, None)], oci=False)
    out["gwa-webhook"] = {"latest": hook, "legacy": legacy, f"sha256-{hook_digest.split(':', 1)[1]}.sig": sig}
    return out


def top(content: Content) -> str:
    """The digest of the manifest no other manifest in ``content`` names (the one a tag points at)."""
    named = {d for mt, body in content.manifests.values() for d, _ in references(mt, body)[1]}
    return next(d for d in reversed(list(content.manifests)) if d not in named)
