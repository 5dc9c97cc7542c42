"""Images [Step 6/7: images]: copy the images the cluster runs from GHCR to Gitea, digests preserved.

inspect: every tag of every plan image that the cluster runs (every namespace; Deployments, StatefulSets,
DaemonSets, CronJobs, Jobs, bare Pods; init containers too) and the digests its pods run (``imageID``),
then the digest of each tag on the source and on Gitea (HEAD only). plan: one change per image whose tags
are missing on Gitea or hold another digest. apply: ``wizard.images.copy`` (progress in bytes and blobs
per image). verify: every such tag is on Gitea with the source's digest.

The same lookups gate the Workloads stage (``missing_in_gitea``): a workload is never pointed at an
image Gitea does not have with the digest its pods run now.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..credentials import Secret
from ..manifests import split_ref
from ..plan import Image, Plan
from .base import (
    WARN,
    Change,
    Check,
    Context,
    Observation,
    Progress,
    Stage,
    StageFailed,
    failed,
    passed,
    skipped,
    text_diff,
)

RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def list_served(cluster, kind: str, namespace: str | None) -> list[dict]:
    """``cluster.list``, where a kind the API does not serve (404: a cluster without batch/v1) lists nothing."""
    from ..cluster import ApiError
    try:
        return cluster.list(kind, namespace)
    except ApiError as e:
        if e.status != 404:
            raise
        return []


def pod_spec(kind: str, obj: dict) -> dict:
    """The pod spec of a workload object (a bare Pod's own spec; a CronJob's job template's)."""
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


@dataclass
class Wanted:
    """One reference of a plan image the cluster runs: where, and the digests its pods run now."""

    image: Image
    tag: str  # "" for a digest-only reference
    digest: str = ""  # the reference's own @digest, if any
    running: set[str] = field(default_factory=set)  # from the pods' imageID
    where: set[str] = field(default_factory=set)

    @property
    def reference(self) -> str:
        return self.tag or self.digest

    @property
    def label(self) -> str:
        return f"{self.image.source}{':' + self.tag if self.tag else '@' + self.digest}"


def running_references(cluster, plan: Plan) -> dict[tuple[str, str], Wanted]:
    """``{(plan image source, tag or digest): Wanted}`` for everything the cluster runs (every namespace)."""
    wanted: dict[tuple[str, str], Wanted] = {}

    def note(image: str, where: str) -> Wanted | None:
        hit = split_ref(image, plan)
        if hit is None:
            return None
        img, tag, digest = hit
        w = wanted.setdefault((img.source, tag or digest), Wanted(img, tag, digest))
        w.where.add(where)
        return w

    for kind in RUNNING_KINDS:
        for obj in list_served(cluster, kind, None):
            md = obj.get("metadata") or {}
            spec = pod_spec(kind, obj)
            where = f"{kind} {md.get('namespace')}/{md.get('name')}"
            images = {c.get("name"): c.get("image", "") for key in ("initContainers", "containers")
                      for c in spec.get(key) or []}
            for image in images.values():
                note(image, where)
            if kind != "Pod":
                continue
            st = obj.get("status") or {}
            for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
                image_id = cs.get("imageID") or ""
                w = note(images.get(cs.get("name"), ""), where)
                if w is not None and "@sha256:" in image_id:
                    w.running.add("sha256:" + image_id.rsplit("@sha256:", 1)[1])
    return dict(sorted(wanted.items()))


def running_by_image(plan: Plan, wanted: dict[tuple[str, str], Wanted]) -> dict[str, tuple[str, ...]]:
    """``{plan image source: (tag or @digest, …)}`` of what the cluster runs (``running_references``), in its order."""
    out: dict[str, tuple[str, ...]] = {i.source: () for i in plan.images}
    for w in wanted.values():
        out[w.image.source] = (*out.get(w.image.source, ()), w.reference)
    return out


def source_credentials(ctx: Context):
    """The source registry's credentials: GHCR_TOKEN / --ghcr-token-file (``ctx.ghcr_token``), else the
    old pull secret's entry for the source host (what the cluster pulls with today), else anonymous."""
    from ..images.client import Credentials
    from .registry_secrets import read_auths
    if ctx.ghcr_token is not None:
        return Credentials(os.environ.get("GHCR_USER", "").strip() or "ghcr2gitea", ctx.ghcr_token)
    p = ctx.plan
    hosts = {i.source.split("/", 1)[0] for i in p.images}
    auths = read_auths(ctx.cluster.get("Secret", p.old_pull_secret, p.secrets_namespace))
    for host in sorted(hosts):
        entry = auths.get(host) or {}
        user, password = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(password, str) and user and password:
            return Credentials(user, Secret(password))
    return None


@dataclass
class Lookup:
    """What both registries hold for the running references."""

    wanted: dict[tuple[str, str], Wanted]
    source: dict[tuple[str, str], str | None] = field(default_factory=dict)
    target: dict[tuple[str, str], str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # bearer tokens met (only to mask messages)

    def expected(self, key: tuple[str, str]) -> set[str]:
        """The digests Gitea must hold for this reference: what its pods run, else its own @digest, else the
        source's."""
        w = self.wanted[key]
        return set(w.running) or ({w.digest} if w.digest else set()) or {self.source.get(key)} - {None}

    def summary(self) -> list[str]:
        """What the screen says about it: how many references run, and how many Gitea already holds."""
        if not self.wanted:
            return ["running images: none of the plan's images run in the cluster"]
        head = f"running images: {len(self.wanted)} reference(s) of the plan's images"
        if not self.target and not self.errors:
            return [head + " (the registries were not asked: no token)"]
        missing = [w.label for k, w in self.wanted.items()
                   if self.target.get(k) is None or (self.expected(k) and self.target[k] not in self.expected(k))]
        lines = [head + f"; Gitea holds {len(self.wanted) - len(missing)} with the digest they run"]
        if missing:
            lines.append(f"to copy: {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3
                                                               else ""))
        if self.errors:
            lines.append(f"lookup errors: {len(self.errors)} — {self.errors[0]}")
        return lines


def look_up(ctx: Context, wanted: dict[tuple[str, str], Wanted], *, source: bool = True) -> Lookup:
    """HEAD every wanted reference on Gitea (and on the source): GET/HEAD only."""
    from .. import authflow
    from ..images.client import RegistryError, scope_of
    from ..images.command import registries
    out = Lookup(wanted)
    creds = source_credentials(ctx) if source else None

    async def run() -> None:
        import asyncio
        async with registries(ctx.plan, ctx.token, creds, read_only=True) as (src, dst, _owner):
            async def one(reg, key, w: Wanted, repo: str, into: dict) -> None:
                try:
                    into[key] = await reg.head_manifest(repo, w.reference, scopes=(scope_of(repo, "pull"),))
                except RegistryError as e:
                    into[key] = None
                    out.errors.append(f"{w.label}: {e}")
            jobs = [one(dst, k, w, w.image.target_repo, out.target) for k, w in wanted.items()]
            if source:
                jobs += [one(src, k, w, w.image.source_repo, out.source) for k, w in wanted.items()]
            await asyncio.gather(*jobs)
            out.tokens = src.tokens() + dst.tokens()

    authflow.run_sync(run())
    return out


def missing_in_gitea(ctx: Context, refs: set[tuple[str, str]] | None = None) -> list[Check]:
    """The gate: each reference (of ``refs``, default all the cluster runs) that Gitea does not hold with the
    digest its pods run now (or, where no pod runs it, the source's digest) — a failed check each."""
    return gate(ctx, refs)[1]


def gate(ctx: Context, refs: set[tuple[str, str]] | None = None,
         more: dict[tuple[str, str], Wanted] | None = None) -> tuple[Lookup, list[Check]]:
    """``missing_in_gitea`` with the Lookup it judged by (what Gitea holds for each reference: the digests
    ``workloads.pin_digests`` writes). ``more``: references nothing runs (a manifest file's tags) to look up
    too; Gitea's digest is all that is asked of them."""
    wanted = running_references(ctx.cluster, ctx.plan)
    if refs is not None:
        wanted = {k: w for k, w in wanted.items() if k in refs}
        by_source = {i.source: i for i in ctx.plan.images}
        for src, ref in refs - set(wanted):  # what no pod spec names yet: a digest the Workloads stage pins
            if src in by_source:
                digest = ref if ref.startswith("sha256:") else ""
                wanted[(src, ref)] = Wanted(by_source[src], "" if digest else ref, digest)
    checked = set(wanted)
    for k, w in (more or {}).items():
        wanted.setdefault(k, w)
    if not wanted:
        return Lookup(wanted), []
    need_source = any(not w.running and not w.digest for k, w in wanted.items() if k in checked)
    found = look_up(ctx, wanted, source=need_source)
    out = []
    for key, w in wanted.items():
        if key not in checked:
            continue
        have = found.target.get(key)
        expect = found.expected(key)
        target = f"{w.image.target}{':' + w.tag if w.tag else '@' + w.digest}"
        if have is not None and (not expect or have in expect):
            continue
        if have is None:
            cause = f"{target} is not in Gitea"
        else:
            cause = f"{target} in Gitea is {have}, not the digest its pods run now ({', '.join(sorted(expect))})"
        out.append(failed(f"{w.label} is in Gitea", cause, "run stage Images (ghcr2gitea images), or push it "
                          "through CI; nothing was patched", {"image": w.image.source, "tag": w.reference,
                                                              "gitea": have or "", "pods": sorted(w.running),
                                                              "where": sorted(w.where)}))
    return found, out


def pinned(found: Lookup, key: tuple[str, str]) -> str | None:
    """The digest to pin a reference to: the one Gitea holds for it, when that is what its pods run (run by
    none: the source's digest, where the source was asked; else whatever Gitea holds); None when Gitea lacks it or holds another digest (the gate names it)."""
    have = found.target.get(key)
    if have is None or not have.startswith("sha256:"):
        return None
    expect = found.expected(key) if key in found.wanted else set()
    return have if not expect or have in expect else None


@dataclass(frozen=True)
class ImagesSeen(Observation):
    """The image references the cluster runs, and what each registry holds for them."""

    lookup: Lookup


class Images(Stage):
    key, title, guide_step = "images", "Images", "Step 6/7: images"
    description = ("Copies the images the cluster runs from GHCR to Gitea with their digests preserved: every tag "
                   "of the plan's images that any namespace runs (Deployments, StatefulSets, DaemonSets, CronJobs, "
                   "Jobs, bare Pods, init containers), the whole index (every platform, attestations) byte for "
                   "byte, only what Gitea lacks. A tag Gitea already holds with the same digest is skipped.")

    def inspect(self, ctx: Context) -> ImagesSeen:
        wanted = running_references(ctx.cluster, ctx.plan)
        if ctx.token is None or not wanted:
            return ImagesSeen(Lookup(wanted))
        return ImagesSeen(look_up(ctx, wanted))

    def plan(self, ctx: Context, observed: ImagesSeen) -> list[Change]:
        found = observed.lookup
        if ctx.token is None:
            return []
        # a tag the source cannot show is a stop only when Gitea lacks it too (nothing to copy it from)
        unreadable = [w.label for k, w in found.wanted.items() if found.source.get(k) is None
                      and found.target.get(k) is None]
        if unreadable:
            raise StageFailed(failed("source images readable", f"cannot read {', '.join(unreadable)} on "
                                     f"{ctx.plan.source_url}" + (f": {found.errors[0]}" if found.errors else ""),
                                     "give a GitHub token with read:packages (GHCR_TOKEN or --ghcr-token-file), "
                                     "or check ghcr.url in the plan", {"errors": found.errors[:5]}))
        changes = []
        by_image: dict[str, list[tuple[tuple[str, str], Wanted]]] = {}
        for key, w in found.wanted.items():
            by_image.setdefault(w.image.source, []).append((key, w))
        for items in by_image.values():
            img = items[0][1].image
            todo = [(k, w) for k, w in items if found.source.get(k) is not None
                    and found.target.get(k) != found.source.get(k)]
            if not todo:
                continue
            before = "\n".join(f"{w.reference}: {found.target.get(k) or '(missing)'}" for k, w in todo)
            after = "\n".join(f"{w.reference}: {found.source.get(k)}" for k, w in todo)
            title = f"image {img.target}"
            changes.append(Change(title, "copy", text_diff(before, after, img.target),
                                  (img, tuple(w.reference for _, w in todo))))
        return changes

    def dry_run(self, ctx: Context, changes: list[Change]) -> list[str]:
        return [f"copy {ch.payload[0].source}:{t} → {ch.payload[0].target}:{t} (only the blobs Gitea lacks)"
                for ch in changes for t in ch.payload[1]]

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        from .. import authflow
        from ..credentials import mask
        from ..images.command import progress_line, registries
        from ..images.copier import CopyOptions, copy, copy_jobs
        jobs = copy_jobs(ctx.plan, {img.source: refs for img, refs in (ch.payload for ch in changes)})
        if not jobs:
            return
        creds = source_credentials(ctx)
        last: dict[str, object] = {}  # image → its latest copier Progress

        def progress(p) -> None:
            last[p.image] = p
            ctx.stop.check()  # Abort: raised here, and the copy unwinds
            # no message (the log gets one line per image at the end): the UI draws a bar per image from it
            ctx.progress(Progress(self.key, "", time=time.time(), transfer=p))

        for img, refs in (ch.payload for ch in changes):
            ctx.say(self.key, f"copy {img.source} → {img.target}: {', '.join(refs)}")

        async def run():
            async with registries(ctx.plan, ctx.token, creds) as (src, dst, owner_exists):
                return await copy(src, dst, jobs, CopyOptions(owner_exists=owner_exists, progress=progress))

        report = authflow.run_sync(run())
        ctx.cache.images_report = report.to_dict()
        # one line per image, in the plan's order (the copies run at once; their live order is not the log's)
        for res in report.images:
            p = last.get(res.target)
            if p is not None:
                ctx.say(self.key, progress_line(p))  # which blobs were mounted, not sent, is in the report
        if not report.ok:
            bad = [f"{i.source}: {e}" for i in report.images for e in i.errors]
            bad += [f"{i.source}:{t.tag}: {t.error}" for i in report.images for t in i.tags if t.status == "failed"]
            cause = mask("; ".join(bad[:3]) + (" …" if len(bad) > 3 else ""), ctx.token, ctx.ghcr_token)
            raise StageFailed(failed("images copied", cause, "fix the cause and apply again: a rerun sends only "
                                     "what Gitea still lacks", {"failures": len(bad)}))

    def verify(self, ctx: Context) -> list[Check]:
        if ctx.token is None:
            return [skipped("images in Gitea", "no Gitea token given",
                            "set GITEA_TOKEN or pass --token-file to compare the digests")]
        found = self.inspect(ctx).lookup
        if not found.wanted:
            return [passed("images in Gitea", {"running": 0}, "the cluster runs none of the plan's images")]
        checks = []
        for key, w in found.wanted.items():
            src, tgt = found.source.get(key), found.target.get(key)
            name = f"{w.image.target}:{w.reference}" if w.tag else f"{w.image.target}@{w.reference}"
            ev = {"image": w.image.source, "tag": w.reference, "source": src or "", "target": tgt or ""}
            if src is None and tgt is not None:
                checks.append(Check(f"{name} has the source digest", WARN, f"Gitea has {tgt}, but {w.label} "
                                    f"cannot be read on {ctx.plan.source_url} to compare",
                                    "give a GitHub token with read:packages (GHCR_TOKEN or --ghcr-token-file)",
                                    ev, gating=False))
            elif src is None:
                checks.append(failed(f"{name} has the source digest", f"{w.label} cannot be read on "
                                     f"{ctx.plan.source_url}", "give a GitHub token with read:packages "
                                     "(GHCR_TOKEN or --ghcr-token-file)", ev))
            elif tgt is None:
                checks.append(failed(f"{name} has the source digest", f"{name} is not in Gitea (source {src})",
                                     "apply stage Images", ev))
            elif tgt != src:
                checks.append(failed(f"{name} has the source digest", f"Gitea has {tgt}, the source {src}",
                                     "apply stage Images (it copies the source's bytes again)", ev))
            else:
                checks.append(passed(f"{name} has the source digest", ev, f"{src} on both"))
        return checks


__all__ = ["Images", "gate", "missing_in_gitea", "pinned", "running_by_image", "running_references"]
