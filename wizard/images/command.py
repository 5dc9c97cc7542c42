"""``ghcr2gitea images --plan F``: copy the plan's images from GHCR to Gitea, digests preserved.

The command is thin: it reads the plan and the credentials, builds the two registry clients
(``--resolve`` and the plan's CA file for Gitea, the system roots for GHCR) and hands the jobs
to ``copier.copy``. Progress goes to stderr, the report to stdout (text, or JSON with
``--format json``). What is copied of each image: the tags and digests the cluster runs (read as
stage Images reads them: every namespace and workload kind, the pods' ``imageID``), plus
``--all-tags`` or ``--tags REGEX``; with no cluster to read (and none named), those alone, else
``latest``.

Credentials: the Gitea token as every command reads it (``--token-file`` or GITEA_TOKEN); GHCR
anonymously for public images, or a GitHub token with ``read:packages`` from ``--ghcr-token-file`` or GHCR_TOKEN.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

EXIT = ("0 every tag copied or already there (or would be, with --dry-run), 1 a tag or image failed, 2 error, "
        "130 interrupted")


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"--tags {text!r}: not a regular expression ({e})") from None
    return text


def _mib(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chunk-mib {text!r}: expected a whole number of MiB") from None
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"--chunk-mib {text!r}: between 1 and 1024")
    return n


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency {text!r}: expected a whole number") from None
    if not 1 <= n <= 16:
        raise argparse.ArgumentTypeError(f"--concurrency {text!r}: between 1 and 16 (Gitea: 1–2)")
    return n


def add_parser(sub) -> None:
    """Register ``images`` on the CLI's subparsers."""
    p = sub.add_parser("images", help="copy the plan's images from GHCR to Gitea with their digests preserved; "
                       "a rerun sends only what is missing", epilog=f"exit codes: {EXIT}")
    p.add_argument("--plan", required=True, metavar="FILE", help="the migration plan (YAML)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the Gitea token (mode 600); else GITEA_TOKEN")
    p.add_argument("--ghcr-token-file", metavar="FILE", help="file holding a GitHub token with read:packages for "
                   "private source images (mode 600); else GHCR_TOKEN; else anonymous")
    p.add_argument("--dry-run", action="store_true", help="only GET and HEAD: report what would be copied")
    p.add_argument("--all-tags", action="store_true", help="every tag of each source image")
    p.add_argument("--tags", type=_regex, metavar="REGEX", help="the source tags matching REGEX (whole tag)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="the report on stdout (default text)")
    p.add_argument("--concurrency", type=_workers, default=2, metavar="N", help="blob uploads at once (default 2)")
    p.add_argument("--chunk-mib", type=_mib, default=16, metavar="N",
                   help="chunk size of chunked uploads in MiB (default 16)")
    p.add_argument("--source-url", metavar="URL", help="the source registry's URL (default https://ghcr.io): a "
                   "mirror, or a test registry")
    p.add_argument("--source-ca-file", metavar="FILE", help="CA bundle for the source registry (default: the "
                   "system roots)")
    p.add_argument("--kubeconfig", metavar="FILE", help="the cluster whose running tags and digests are copied "
                   "(default: KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the plan's cluster.context, else current)")
    p.set_defaults(run=run)


def _err(msg: str) -> None:
    print(f"ghcr2gitea: {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    from .. import plan as plan_mod
    from ..credentials import CredentialError, load_ghcr_token, load_token
    try:
        plan = plan_mod.load(args.plan)
    except plan_mod.PlanError as e:
        for line in e.problems:
            _err(line)
        return 2
    try:
        token = load_token(args.token_file)
        source_secret = load_ghcr_token(getattr(args, "ghcr_token_file", None))
    except CredentialError as e:
        _err(str(e))
        return 2
    if args.source_url and not re.fullmatch(r"https?://[^/?#\s]+/?", args.source_url):
        _err(f"--source-url {args.source_url!r}: expected https://HOST[:PORT]")
        return 2
    from . import reference
    sources = {reference.parse(i.source).registry for i in plan.images}
    if len(sources) != 1:
        _err(f"images: the sources are on {len(sources)} registries ({', '.join(sorted(sources))}); one run copies "
             "from one registry")
        return 2
    running = _running(args, plan)
    if running is None:
        return 2
    import asyncio
    try:
        report = asyncio.run(_copy(args, plan, token, source_secret, sources.pop(), running))
    except KeyboardInterrupt:
        _err("interrupted: nothing half-written is tagged; run the same command again to send what is missing")
        return 130
    if args.format == "json":
        print(json.dumps({**report.to_dict(), "digests": report.digests()}, indent=2))
    else:
        _text(report)
    return 0 if report.ok else 1


def _running(args, plan) -> dict[str, tuple[str, ...]] | None:
    """What to copy of each plan image: the tags and digests the cluster runs (stage Images' reading of every
    namespace, pods' imageID included). No cluster to read: with --kubeconfig/--context that is an error (None);
    otherwise a note, and only --tags/--all-tags, else ``latest``."""
    from ..kube import ClusterUnreachable, cluster_configured
    selected = {i.source: () if (args.all_tags or args.tags) else ("latest",) for i in plan.images}
    chosen = "the tags --tags/--all-tags select" if (args.all_tags or args.tags) else "the tag latest"
    if not args.context and not cluster_configured(args.kubeconfig):
        _err(f"note: no kubeconfig (pass --kubeconfig FILE or set KUBECONFIG) to read what the cluster runs: "
             f"copying {chosen} of each image")
        return selected
    from ..cluster import ApiError, ClusterReader
    from ..stages.images import running_by_image, running_references
    try:
        cluster = ClusterReader.connect(args.kubeconfig, args.context or plan.context, patience=10,
                                        on_retry=lambda m: None)
        try:
            wanted = running_references(cluster, plan)
        finally:
            cluster.close()
    except (ClusterUnreachable, ApiError) as e:
        if args.kubeconfig or args.context:
            _err(f"images: cannot read what the cluster runs: {e}")
            return None
        _err(f"note: no cluster to read ({e}): copying {chosen} of each image")
        return selected
    return running_by_image(plan, wanted)


async def _copy(args, plan, token, source_secret, source_host: str, running: dict[str, tuple[str, ...]]):
    from .client import Credentials
    from .copier import CopyOptions, copy, copy_jobs
    mib = 1024 * 1024
    user = os.environ.get("GHCR_USER", "").strip() or "ghcr2gitea"
    jobs = copy_jobs(plan, running, all_tags=args.all_tags, tag_pattern=args.tags)
    for img in plan.images:
        if not any(j.source == img.source_repo for j in jobs):
            _err(f"note: {img.source}: the cluster runs none of its tags; nothing selected (give --tags REGEX or "
                 "--all-tags to copy tags nothing runs)")
    shown: dict[str, float] = {}

    def progress(p) -> None:
        now = time.monotonic()
        done = p.blobs_done == p.blobs_total
        if not done and now - shown.get(p.image, 0) < 1.0:
            return
        shown[p.image] = now
        print(f"  {progress_line(p)}", file=sys.stderr, flush=True)

    async with registries(plan, token, Credentials(user, source_secret) if source_secret else None,
                          source_url=args.source_url or plan.source_url,
                          source_ca_file=args.source_ca_file or plan.ghcr_ca_file) as (src, dst, owner_exists):
        return await copy(src, dst, jobs, CopyOptions(concurrency=args.concurrency, chunk_size=args.chunk_mib * mib,
                                                      dry_run=args.dry_run, owner_exists=owner_exists,
                                                      progress=progress))


def progress_line(p) -> str:
    """One copier Progress as the CLI and the Images stage print it: bytes and blobs of one image."""
    return f"{p.image}: {progress_counts(p)}"


def progress_counts(p) -> str:
    """``12.0/264.0 MiB, 3/9 blobs`` (KiB when the image is under 1 MiB): what the UI writes next to a bar."""
    unit, div = ("MiB", 1024 * 1024) if p.bytes_total >= 1024 * 1024 else ("KiB", 1024)
    return f"{p.bytes_done / div:.1f}/{p.bytes_total / div:.1f} {unit}, {p.blobs_done}/{p.blobs_total} blobs"


@contextlib.asynccontextmanager
async def registries(plan, token, source_credentials, *, source_url: str | None = None,
                     source_ca_file: str | None = None, read_only: bool = False):
    """The source (GHCR) and target (Gitea) registry clients of a plan, and the Gitea owner check.

    Both go through ``network.resolve``; Gitea's with ``registry.ca_file``, the source's with
    ``ghcr.ca_file``. Gitea's token comes from its realm (ROOT_URL), or — while the realm cannot be used
    over HTTPS yet — from the registry host's own ``/v2/token`` (credentials never go to plain HTTP).
    """
    from .. import netclient
    from .client import BULK_READ, Credentials, Registry
    source_url = (source_url or plan.source_url).rstrip("/")
    ca = source_ca_file if source_ca_file is not None else plan.ghcr_ca_file
    s_async = netclient.async_client(plan.resolve, ca_file=ca, timeout=60)
    t_async = netclient.async_client(plan.resolve, ca_file=plan.registry_ca_file, timeout=60)
    s_bulk = netclient.client(plan.resolve, ca_file=ca, timeout=60, read_size=BULK_READ)
    t_bulk = netclient.client(plan.resolve, ca_file=plan.registry_ca_file, timeout=60, read_size=BULK_READ)
    src = Registry(source_url, s_async, bulk=s_bulk, credentials=source_credentials)
    dst = Registry(plan.registry_url, t_async, bulk=t_bulk, read_only=read_only, token_fallback=True,
                   credentials=Credentials(plan.username, token) if token is not None else None)

    async def owner_exists(owner: str) -> bool | None:
        return await gitea_owner_exists(t_async, plan.root_url, owner, token)

    try:
        yield src, dst, owner_exists
    finally:
        await s_async.aclose()
        await t_async.aclose()
        s_bulk.close()
        t_bulk.close()


async def gitea_owner_exists(http, root_url: str, owner: str, token) -> bool | None:
    """Is ``owner`` an organisation or user on Gitea? None when the API cannot say (not reachable, refused)."""
    import httpx
    base = root_url.rstrip("/")
    headers = {"Authorization": f"token {token.reveal()}"} if token else {}
    for kind in ("orgs", "users"):
        try:
            r = await http.get(f"{base}/api/v1/{kind}/{owner}", headers=headers)
        except httpx.HTTPError:
            return None
        if r.status_code == 200:
            return True
        if r.status_code != 404:
            return None
    return False


def _text(report) -> None:
    for img in report.images:
        for e in img.errors:
            print(f"{img.source} → {img.target}: FAILED: {e}")
        for t in img.tags:
            sep = "@" if t.by_digest else ":"
            digest = t.source_digest or "-"
            line = f"{img.source}{sep}{t.tag} → {img.target}{sep}{t.tag}  {digest}  {t.status}"
            if t.error:
                line += f": {t.error}"
            print(line)
        print(f"  {img.target}: {img.blobs_uploaded} blob(s) uploaded ({img.bytes_uploaded / 1048576:.1f} MiB), "
              f"{img.blobs_mounted} mounted, {img.blobs_present} already there")
    failed = sum(t.status == "failed" for i in report.images for t in i.tags) + sum(len(i.errors)
                                                                                    for i in report.images)
    verb = "checked (dry run)" if report.dry_run else "done"
    print(f"{verb} in {report.seconds:.1f} s: {'ok' if report.ok else f'{failed} failure(s)'}")
