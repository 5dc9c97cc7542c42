"""The image copy against skopeo on the same registry pair and the same image.

Two real docker-registry 2.8 with token auth, each behind its own nginx with TLS (the stacks of
tests/real/stack.py), one image pushed by skopeo into the source: a two-platform OCI index with a
buildx-style attestation entry per platform and a large layer both platforms share
(``BENCH_IMAGE_MIB``, default 256). In one run:

- ``skopeo copy --all --preserve-digests`` A → B, then again (nothing to do), then into a second
  repository (by mount) — each a fresh process;
- ``ghcr2gitea images`` (a fresh process, like skopeo's) A → B, the no-op rerun, and a plan with a
  second repository next to the first (its blobs are mounted from the first);
- ``crane copy`` when /var/cache/ghcr2gitea/bin/crane is there (otherwise the row says skipped);
- ``ghcr2gitea images`` on a 512 MiB image (``BENCH_KILL_MIB``; four layers) SIGKILLed once a first
  layer is in, then run again: the rerun must upload only the blobs that were missing.

Uploads of the shared layer are counted in the target's nginx access log (closing PUTs that
answered 201), not taken from either tool. Targets: throughput ≥ 1.0× skopeo's; the shared layer
uploaded once; the second repository gets it by mount (zero uploads).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ._common import REPO, Row, cli, table, verdict

NAME = "image_copy"
CRANE = Path(os.environ.get("GHCR2GITEA_CACHE", "/var/cache/ghcr2gitea")) / "bin" / "crane"
MiB = 1024 * 1024


def _binaries():
    sys.path.insert(0, str(REPO / "tests"))
    from real.stack import Binaries
    found = {n: shutil.which(n) or next((p for p in (f"/usr/sbin/{n}", f"/usr/bin/{n}") if os.access(p, os.X_OK)),
                                        None) for n in ("docker-registry", "nginx", "skopeo", "dnsmasq", "unshare")}
    missing = [n for n, p in found.items() if p is None]
    if missing or os.geteuid() != 0:
        return None, f"needs root and {', '.join(missing) or 'the Debian packages'} (make debs)"
    return Binaries(found["docker-registry"], found["nginx"], found["skopeo"], found["dnsmasq"],
                    found["unshare"]), ""


def _uploads(st, repo: str, digest: str) -> int:
    log = st.dir / "nginx" / "logs" / "access.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    pat = re.compile(rf'"PUT /v2/{re.escape(repo)}/blobs/uploads/\S*digest=sha256%3A{digest[7:]}\S* HTTP/1\.1" 201'
                     rf'|"PUT /v2/{re.escape(repo)}/blobs/uploads/\S*digest={digest}\S* HTTP/1\.1" 201')
    return len(pat.findall(text))


def _mounts(st, repo: str, digest: str) -> int:
    log = st.dir / "nginx" / "logs" / "access.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(re.findall(rf'"POST /v2/{re.escape(repo)}/blobs/uploads/\?\S*mount=sha256(?::|%3A){digest[7:]}\S* '
                          r'HTTP/1\.1" 201', text))


def _skopeo(pair, src_repo: str, dst_repo: str, *, within_target: bool = False):
    """skopeo A → B; ``within_target``: B → B (skopeo mounts only within one registry)."""
    a, b = (pair.target if within_target else pair.source), pair.target
    t0 = time.perf_counter()
    res = b.skopeo("copy", "--all", "--preserve-digests", "--src-creds", pair.creds(a), "--src-cert-dir",
                   str(a.certs_dir), "--dest-creds", pair.creds(b), "--dest-cert-dir", "{certs}",
                   f"docker://{a.registry}/{src_repo}:v1", f"docker://{b.registry}/{dst_repo}:v1", timeout=600)
    wall = time.perf_counter() - t0
    if not res.ok:
        raise RuntimeError(f"skopeo copy failed: {res.stderr[-800:]}")
    return wall


def _ours_argv(pair, targets: list[str], tmp: Path, tag: str = "v1") -> tuple[list[str], dict]:
    import yaml
    a, b = pair.source, pair.target
    plan = {"gitea": {"root_url": b.root_url, "org": "acme", "username": "registry-user"},
            "registry": {"host": b.registry, "ca_file": str(b.ca_bundle)},
            "images": [{"source": "ghcr.io/acme/app", "target": f"{b.registry}/{t}"} for t in targets],
            "network": {"resolve": pair.resolve()}}
    path = tmp / f"plan-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(plan))
    env = {k: v for k, v in os.environ.items() if k not in ("GITEA_TOKEN", "GHCR_TOKEN")}
    env.update(GITEA_TOKEN=b.tokens["registry-user"], GHCR_TOKEN=a.tokens["registry-user"], GHCR_USER="registry-user",
               # the code of this checkout (a worktree), not the one the venv's editable install points at
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    return [*cli(), "images", "--plan", str(path), "--tags", tag, "--format", "json", "--source-url",
            f"https://{a.registry}", "--source-ca-file", str(a.ca_bundle)], env


def _ours(pair, targets: list[str], tmp: Path, tag: str = "v1"):
    """``ghcr2gitea images --plan P --format json`` — the product command, a fresh process like skopeo's."""
    import subprocess
    argv, env = _ours_argv(pair, targets, tmp, tag)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"ghcr2gitea images exited {p.returncode}: {p.stderr[-1500:]} {p.stdout[-1500:]}")
    return wall, json.loads(p.stdout)


def _uploaded(st, repo: str) -> list[str]:
    """Digests of the blob uploads into ``repo`` that the target's nginx logged as completed (201)."""
    log = st.dir / "nginx" / "logs" / "access.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return ["sha256:" + m for m in re.findall(rf'"PUT /v2/{re.escape(repo)}/blobs/uploads/\S*digest=sha256(?::|%3A)'
                                              r'([a-f0-9]{64})\S* HTTP/1\.1" 201', text)]


def _kill_and_resume(pair, tmp: Path, layers: set[str]) -> dict:
    """``ghcr2gitea images`` SIGKILLed once a first large layer is in, then run again: what the rerun sends."""
    import signal
    import subprocess
    argv, env = _ours_argv(pair, ["acme/killed"], tmp, "big")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not set(_uploaded(pair.target, "acme/killed")) & layers:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the copy ended before it could be killed mid-way")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    first = _uploaded(pair.target, "acme/killed")
    wall, report = _ours(pair, ["acme/killed"], tmp, "big")
    both = _uploaded(pair.target, "acme/killed")
    second = both[len(first):]
    return {"first": first, "second": second, "wall": wall, "report": report,
            # the rerun's own count must match what nginx logged: a late log line cannot pass unnoticed
            "ok": (not set(first) & set(second) and layers <= set(both) and report["ok"]
                   and report["totals"]["blobs_uploaded"] == len(second))}


def _crane(pair, dst_repo: str):
    """``crane copy`` of the same image into the same target (the stack runs it in a private mount namespace,
    with both registries' logins and CAs); its wall time."""
    t0 = time.perf_counter()
    p = pair.target.crane("copy", f"{pair.source.registry}/acme/app:v1", f"{pair.target.registry}/{dst_repo}:v1",
                          peers=(pair.source,), timeout=600)
    wall = time.perf_counter() - t0
    if not p.ok:
        raise RuntimeError(f"crane copy failed: {p.stderr[-800:]}")
    return wall


def run() -> list[Row]:
    size_mib = int(os.environ.get("BENCH_IMAGE_MIB", "256"))
    print(f"== {NAME}: our copy vs skopeo copy --all --preserve-digests, two docker-registry 2.8 behind nginx "
          f"TLS, a two-platform index with attestations and a {size_mib} MiB shared layer")
    bins, why = _binaries()
    if bins is None:
        print(f"  skipped: {why}")
        return [Row(NAME, "ran", f"skipped: {why}", "", "")]
    from real.ocibuild import Layout
    from real.stack import RegistryPair, push_layout, raw_manifest
    pair = RegistryPair(bins).start()
    try:
        lay = Layout(pair.dir / "layout")
        shared = lay.random_blob(size_mib * MiB)
        info = lay.image("v1", shared=shared, own_size=4 * MiB)
        push_layout(pair.source, lay.dir, "v1")
        kill_mib = int(os.environ.get("BENCH_KILL_MIB", "512"))
        big = Layout(pair.dir / "layout-big")
        big.image("big", platforms=("linux/amd64",), own_size=kill_mib // 4 * MiB, layers=4, attestations=False)
        push_layout(pair.source, big.dir, "big")
        big_layers = {d for d, n in big.sizes.items() if n == kill_mib // 4 * MiB}
        total = sum(lay.sizes[d] for d in lay.sizes)  # every blob of the image (and its manifests)
        tmp = pair.dir
        sk = _skopeo(pair, "acme/app", "acme/sk")
        sk_again = _skopeo(pair, "acme/app", "acme/sk")
        sk_mount = _skopeo(pair, "acme/sk", "acme/sk2", within_target=True)
        ours, rep = _ours(pair, ["acme/ours"], tmp)
        ours_again, rep_again = _ours(pair, ["acme/ours"], tmp)
        # the plan's other image already has the blobs: they are mounted from there
        ours_mount, both = _ours(pair, ["acme/ours", "acme/ours2"], tmp)
        rep_mount = {"totals": {k: both["images"][1]["blobs"][v] for k, v in (
            ("blobs_mounted", "mounted"), ("blobs_uploaded", "uploaded"), ("blobs_present", "present"))}}
        killed = _kill_and_resume(pair, tmp, big_layers)
        crane = None
        if CRANE.exists():
            crane = _crane(pair, "acme/crane")
        for repo in ("acme/sk", "acme/ours", "acme/ours2"):
            got = raw_manifest(pair.target, repo, "v1")
            if got is None or "sha256:" + hashlib.sha256(got).hexdigest() != info["digest"]:
                raise RuntimeError(f"{repo}:v1 on the target is not the source's index")
        up_ours = _uploads(pair.target, "acme/ours", shared[0])
        up_sk = _uploads(pair.target, "acme/sk", shared[0])
        up_ours2 = _uploads(pair.target, "acme/ours2", shared[0])
        mounted = _mounts(pair.target, "acme/ours2", shared[0])
    finally:
        pair.stop()
    mibs = lambda s: total / MiB / s  # noqa: E731
    lines = [["skopeo copy --all --preserve-digests", f"{sk:.2f} s", f"{mibs(sk):.0f} MiB/s", f"{sk_again:.2f} s",
              f"{sk_mount:.2f} s", str(up_sk)],
             ["ghcr2gitea images", f"{ours:.2f} s", f"{mibs(ours):.0f} MiB/s", f"{ours_again:.2f} s",
              f"{ours_mount:.2f} s", str(up_ours)]]
    if crane is not None:
        lines.append(["crane copy", f"{crane:.2f} s", f"{mibs(crane):.0f} MiB/s", "", "", ""])
    else:
        lines.append(["crane copy", "skipped: /var/cache/ghcr2gitea/bin/crane not built", "", "", "", ""])
    print(table(["tool", "copy", "throughput", "no-op rerun", "2nd repo (mount)", "shared-layer uploads"], lines))
    print(f"  ghcr2gitea images: the copy itself took {rep['seconds']:.2f} s of the {ours:.2f} s wall (the rest: "
          "interpreter start, imports, plan and token)")
    print(f"  image: {total / MiB:.0f} MiB in {len(lay.sizes)} blobs and manifests; ours: "
          f"{rep['totals']['blobs_uploaded']} uploads, rerun {rep_again['totals']['blobs_present']} present / "
          f"0 uploaded, 2nd repo {rep_mount['totals']['blobs_mounted']} mounted / "
          f"{rep_mount['totals']['blobs_uploaded']} uploaded (nginx saw {mounted} mount of the shared layer, "
          f"{up_ours2} upload)")
    print(f"  SIGKILL during a {kill_mib} MiB copy ({len(big_layers) + 1} blobs: 4 layers and the config): {len(killed['first'])} blob(s) were in "
          f"before the kill; the rerun ({killed['wall']:.2f} s) uploaded {len(killed['second'])}, none of them "
          f"again: {'yes' if killed['ok'] else 'NO'} (counted in the target nginx's access log)")
    ratio = sk / ours
    return [Row(NAME, "throughput vs skopeo", f"{ratio:.2f}×", "≥ 1.0×", verdict(ratio >= 1.0)),
            Row(NAME, "no-op rerun: ours / skopeo", f"{ours_again:.2f} / {sk_again:.2f} s"),
            Row(NAME, "uploads of the shared layer", str(up_ours), "1", verdict(up_ours == 1)),
            Row(NAME, "2nd repo by mount: uploads", f"{rep_mount['totals']['blobs_uploaded']} ({ours_mount:.2f} s)",
                "0", verdict(rep_mount["totals"]["blobs_uploaded"] == 0 and up_ours2 == 0 and mounted == 1)),
            Row(NAME, f"SIGKILL mid-copy ({kill_mib} MiB), rerun uploads",
                f"{len(killed['second'])} (before the kill: {len(killed['first'])})", "only the missing ones",
                verdict(killed["ok"])),
            Row(NAME, "crane copy", f"{crane:.2f} s" if crane is not None else "skipped (not built)")]


def main() -> int:
    rows = run()
    print(table(["benchmark", "figure", "value", "target", "verdict"],
                [[r.bench, r.figure, r.value, r.target, r.verdict] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
