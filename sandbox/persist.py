"""The sandbox's world on disk (``Options.persist``), so a demo quit today is the same cluster tomorrow.

What is kept in ``D/world.json`` (mode 600: it holds the world's tokens and CA keys) and ``D/world-blobs/``
(Gitea's blobs, one file per digest, written once): every API object but Pods, with its uid and
resourceVersion; every node's files (modes, mtimes) and unit state (ActiveEnter, restarts, what k3s loaded);
Gitea's images; the world's tokens, certificates and public port. It is saved after changes (checked every
``SAVE_EVERY`` seconds) and on a clean stop, and loaded on start when the folder has one.

What is not kept is what a cluster rebuilds by itself: Pods are made again by their Deployments and
StatefulSets from the kept specs (pulled again through each node's loaded containerd config), a node whose k3s
was restarting finishes its restart, and the kubelets renew their Leases when the world comes back.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from . import oci
from .kinds import BY_KIND
from .memfs import FileEntry
from .pki import CertKey, certkey_from_pem

WORLD = "world.json"
BLOBS = "world-blobs"
VERSION = 1
SAVE_EVERY = 2.0
# the options that make the world what it is: a saved world loads only with the same ones
SHAPE = ("servers", "agents", "seed", "k3s_version", "gitea_version", "systemd_version", "node_timezone",
         "agent_unit_type", "openrc", "existing_registries")
NODE_FIELDS = ("boot_time", "state", "active_enter", "main_pid", "n_restarts", "kubelet_up", "restarts",
               "loaded_registries", "kubelet_started", "inactive_exit")
CERTS = ("lan_ca", "public_root", "traefik_cert", "caddy_cert", "ghcr_cert", "ghcr_storage_cert")
# the leaf certificates' issuers (a loaded CertKey's chain is its chain_pem; the issuer link is for tests)
ISSUERS = {"caddy_cert": "lan_ca", "ghcr_cert": "public_root", "ghcr_storage_cert": "public_root"}
SKIPPED_KINDS = {("v1", "Pod")}


class WorldMismatch(ValueError):
    """The folder's saved world was made with other options (its topology, versions…)."""


def shape(opts) -> dict:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in ((k, getattr(opts, k)) for k in SHAPE)}


def load(directory: Path, opts) -> dict | None:
    """The folder's saved world, or None when it has none; ``WorldMismatch``/``ValueError`` when unusable."""
    path = Path(directory) / WORLD
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        world = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: not a saved sandbox world (unreadable JSON)") from None
    if world.get("version") != VERSION:
        raise ValueError(f"{path}: saved by another version of the sandbox (world version {world.get('version')})")
    saved = world.get("shape") or {}
    differs = [k for k in SHAPE if saved.get(k) != shape(opts).get(k)]
    if differs:
        names = ", ".join("--" + k.replace("_", "-") for k in differs)
        raise WorldMismatch(f"{path} holds a world made with other {names}: give the same options, or start fresh")
    return world


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def snapshot(cluster) -> tuple[dict, dict[str, bytes]]:
    """(the world as JSON-ready data, Gitea's blobs by digest), read on the sandbox's loop."""
    store = cluster.store
    objects = {}
    for kind, st in store.kinds.items():
        if (kind.api_version, kind.kind) in SKIPPED_KINDS or not st.objects:
            continue
        objects[f"{kind.api_version}|{kind.kind}"] = list(st.objects.values())
    nodes = {}
    for name, node in cluster.nodes.items():
        nodes[name] = {
            "fields": {f: getattr(node, f) for f in NODE_FIELDS},
            "files": {p: [_b64(e.data), e.mode, e.mtime] for p, e in node.fs._files.items()},
            "dirs": {p: [e.mode, e.mtime] for p, e in node.fs._dirs.items()},
        }
    blobs: dict[str, bytes] = {}
    repos = {}
    for repo, r in cluster.gitea.repos.items():
        repos[repo] = {"tags": dict(r.tags), "manifests": {d: [mt, _b64(body)] for d, (mt, body) in r.manifests.items()},
                       "blobs": sorted(r.blobs)}
        blobs.update(r.blobs)
    certs = {name: [getattr(cluster, name).chain_pem.decode(), getattr(cluster, name).key_pem.decode()]
             for name in CERTS}
    world = {"version": VERSION, "saved": time.time(), "shape": shape(cluster.opts),
             "public_port": cluster.public_port, "rv": store.rv,
             "tokens": {"gitea": cluster.token, "reader": cluster.reader_token, "ghcr": cluster.ghcr_token,
                        "more": {u.name: sorted(u.more_tokens) for u in cluster.gitea.users.values()},
                        "read": {u.name: sorted(u.read_tokens) for u in cluster.gitea.users.values() if u.read_tokens}},
             "certs": certs, "objects": objects, "nodes": nodes, "gitea": repos}
    return world, blobs


def save(cluster, directory: Path) -> None:
    """Write the world: new blobs first, then ``world.json`` atomically (temp, fsync, rename; mode 600)."""
    world, blobs = snapshot(cluster)
    directory = Path(directory)
    blob_dir = directory / BLOBS
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, data in blobs.items():
        path = blob_dir / digest.replace(":", "-")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    path = directory / WORLD
    tmp = path.with_name(WORLD + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(world, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def signature(cluster) -> tuple:
    """What changes when the world does (cheap): the store's resourceVersion, Gitea's tags, the nodes' units."""
    return (cluster.store.rv, tuple(sorted(cluster.gitea.tag_digests().items())),
            tuple((n.state, n.n_restarts, len(n.fs._files)) for n in cluster.nodes.values()))


# ---------------------------------------------------------------------------------------------- loading
def restore_identity(cluster, world: dict) -> None:
    """Before ``Cluster.build``: the world's tokens, certificates and port, so every client file stays valid."""
    from .vnet import Network
    t = world["tokens"]
    cluster.token, cluster.reader_token, cluster.ghcr_token = t["gitea"], t["reader"], t["ghcr"]
    loaded: dict[str, CertKey] = {}
    for name in CERTS:
        chain, key = world["certs"][name]
        ck = certkey_from_pem(chain.encode(), key.encode())
        issuer = loaded.get(ISSUERS.get(name, ""))
        loaded[name] = CertKey(ck.cert, ck.key, ck.cert_pem, ck.key_pem, ck.chain_pem, issuer)
    cluster.lan_ca, cluster.public_root, cluster.traefik_cert = (loaded["lan_ca"], loaded["public_root"],
                                                                 loaded["traefik_cert"])
    cluster.pinned_certs = {k: loaded[k] for k in ("caddy_cert", "ghcr_cert", "ghcr_storage_cert")}
    lookup = cluster.network.lookup_hook
    cluster.network = Network(system_roots=[cluster.public_root])
    cluster.network.lookup_hook = lookup
    cluster.public_port = cluster.opts.public_port = world["public_port"]


def restore_world(cluster, world: dict, directory: Path) -> None:
    """In ``Cluster.build``, instead of the guide's starting objects: the saved objects, files and images."""
    store = cluster.store
    for key, objs in world["objects"].items():
        api_version, kind_name = key.split("|", 1)
        kind = BY_KIND[(api_version, kind_name)]
        st = store.kinds[kind]
        for obj in objs:
            md = obj["metadata"]
            st.objects[(md.get("namespace", "") if kind.namespaced else "", md["name"])] = obj
    store.rv = int(world["rv"])
    store.compact()  # no watch outlives the world's process: any older resourceVersion is 410 Gone
    for name, saved in world["nodes"].items():
        node = cluster.nodes.get(name)
        if node is None:
            continue
        fs = node.fs
        fs._files.clear()
        fs._dirs.clear()
        fs._dirs.update({p: FileEntry(b"", mode, mtime) for p, (mode, mtime) in saved["dirs"].items()})
        fs._files.update({p: FileEntry(_unb64(data), mode, mtime) for p, (data, mode, mtime) in saved["files"].items()})
        for f, v in saved["fields"].items():
            setattr(node, f, v)
        node.last_lease = time.time()
    blob_dir = Path(directory) / BLOBS
    for repo, saved in world["gitea"].items():
        r = cluster.gitea.repos.setdefault(repo, oci.Repo())
        r.tags.update(saved["tags"])
        r.manifests.update({d: (mt, _unb64(body)) for d, (mt, body) in saved["manifests"].items()})
        for digest in saved["blobs"]:
            r.blobs[digest] = (blob_dir / digest.replace(":", "-")).read_bytes()
    for name, more in (world["tokens"].get("more") or {}).items():
        user = cluster.gitea.users.get(name)
        if user is not None:
            user.more_tokens.update(more)
    for name, read in (world["tokens"].get("read") or {}).items():
        user = cluster.gitea.users.get(name)
        if user is not None:
            user.read_tokens.update(read)
