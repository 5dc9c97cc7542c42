"""Test images built in Python as an OCI image layout (no Docker engine here); skopeo pushes them.

``Layout(dir)`` collects blobs; ``image(tag, …)`` adds a multi-platform index the way buildx
writes one — a manifest per platform sharing one large layer, and an attestation manifest per
platform (platform ``unknown/unknown``, ``vnd.docker.reference.type: attestation-manifest``, an
in-toto layer) — or, with ``docker=True``, a Docker manifest list of Docker v2 manifests.
Layers are random bytes (incompressible, so nobody can shrink them on the way), written in pieces
with their sha256 computed as they are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MiB = 1024 * 1024


@dataclass
class Layout:
    dir: Path
    refs: list[dict] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (self.dir / "blobs" / "sha256" / digest).write_bytes(data)
        self.sizes["sha256:" + digest] = len(data)
        return "sha256:" + digest, len(data)

    def random_blob(self, size: int) -> tuple[str, int]:
        h = hashlib.sha256()
        tmp = self.dir / "blobs" / f"tmp-{os.getpid()}-{len(self.sizes)}"
        with open(tmp, "wb") as f:
            left = size
            while left > 0:
                piece = os.urandom(min(16 * MiB, left))
                h.update(piece)
                f.write(piece)
                left -= len(piece)
        digest = h.hexdigest()
        tmp.rename(self.dir / "blobs" / "sha256" / digest)
        self.sizes["sha256:" + digest] = size
        return "sha256:" + digest, size

    def image(self, tag: str | None, *, platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
              shared: tuple[str, int] | None = None, own_size: int = 64 * 1024, attestations: bool = True,
              docker: bool = False, layers: int = 1) -> dict:
        """An index of ``platforms`` (each with ``shared`` plus ``layers`` own random layers); its facts."""
        mtype, ctype, ltype = (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER) if docker else \
            (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
        entries, manifests = [], {}
        for plat in platforms:
            os_, arch = plat.split("/")[:2]
            own = [self.random_blob(own_size) for _ in range(layers)]
            lays = ([shared] if shared else []) + own
            config = json.dumps({"architecture": arch, "os": os_, "config": {"Env": [f"PLATFORM={plat}"]},
                                 "rootfs": {"type": "layers", "diff_ids": [d for d, _ in lays]}},
                                sort_keys=True).encode()
            c = self.put(config)
            body = json.dumps({"schemaVersion": 2, "mediaType": mtype,
                               "config": {"mediaType": ctype, "digest": c[0], "size": c[1]},
                               "layers": [{"mediaType": ltype, "digest": d, "size": s} for d, s in lays]},
                              indent=3).encode()  # an unusual indent: re-serialising would change the digest
            m = self.put(body)
            manifests[plat] = m[0]
            entries.append({"mediaType": mtype, "digest": m[0], "size": m[1],
                            "platform": {"architecture": arch, "os": os_}})
            if attestations and not docker:
                statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1",
                                        "predicateType": "https://slsa.dev/provenance/v0.2",
                                        "subject": [{"name": tag or "x", "digest": {"sha256": m[0][7:]}}]}).encode()
                s = self.put(statement)
                acfg = self.put(json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                                            "rootfs": {"type": "layers", "diff_ids": [s[0]]}}).encode())
                abody = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                    "config": {"mediaType": OCI_CONFIG, "digest": acfg[0], "size": acfg[1]},
                                    "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": s[0],
                                                "size": s[1], "annotations": {
                                                    "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}
                                               ]}).encode()
                a = self.put(abody)
                entries.append({"mediaType": OCI_MANIFEST, "digest": a[0], "size": a[1],
                                "platform": {"architecture": "unknown", "os": "unknown"},
                                "annotations": {"vnd.docker.reference.digest": m[0],
                                                "vnd.docker.reference.type": "attestation-manifest"}})
        index = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX,
                            "manifests": entries}).encode()
        i = self.put(index)
        self.ref(tag, i[0], i[1], DOCKER_LIST if docker else OCI_INDEX)
        return {"digest": i[0], "manifests": manifests, "entries": len(entries)}

    def small(self, tag: str, text: str = "small") -> str:
        """A one-layer image manifest (no index): a signature stand-in or a plain tag."""
        layer = self.put(text.encode())
        cfg = self.put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                                   "rootfs": {"type": "layers", "diff_ids": [layer[0]]}}).encode())
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": cfg[0], "size": cfg[1]},
                           "layers": [{"mediaType": OCI_LAYER, "digest": layer[0], "size": layer[1]}]}).encode()
        m = self.put(body)
        self.ref(tag, m[0], m[1], OCI_MANIFEST)
        return m[0]

    def nested(self, tag: str, inner_digest: str, inner_size: int) -> str:
        """An index whose only entry is another index (Gitea refuses these)."""
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_INDEX, "digest": inner_digest, "size": inner_size}]}).encode()
        d = self.put(body)
        self.ref(tag, d[0], d[1], OCI_INDEX)
        return d[0]

    def ref(self, tag: str | None, digest: str, size: int, media: str) -> None:
        if tag is None:
            return
        self.refs.append({"mediaType": media, "digest": digest, "size": size,
                          "annotations": {"org.opencontainers.image.ref.name": tag}})
        (self.dir / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.refs}))

    def tags(self) -> list[str]:
        return [r["annotations"]["org.opencontainers.image.ref.name"] for r in self.refs]
