"""Copy images registry to registry with their digests preserved, and only what is missing.

For each job (a source repository, a target repository, which tags) the copy first PLANS with
GET and HEAD only, and reports what stops it before any upload: the target owner missing, tags
that differ only in case (Gitea stores tags lowercase: they would overwrite each other), a
nested index (Gitea refuses it). Then, per tag:

1. the manifest is fetched with all four media types accepted, its sha256 checked; an index
   brings every child (every platform and the buildx attestation entries ``unknown/unknown``);
2. the target tag is HEADed: the same digest means nothing to do (the rerun is the resume);
3. every blob is HEADed in the target repository, mounted from another repository that has it
   (``POST ?mount=&from=``; a 202 instead of a 201 is a half-opened upload, cancelled), or
   uploaded: POST then one streamed PUT for small blobs, chunked PATCHes with ``Content-Range``
   then a PUT for large ones or after a 413 or a cut-off — never the single-POST form
   (docker-registry 2.8 discards its body). Blobs are deduplicated by digest across the run;
   at most ``concurrency`` uploads run at once. Bytes are sha256-checked while streaming and the
   last piece is held back until they match, so a corrupted blob never completes;
4. only when every blob of the tag is there are the child manifests and then the tag PUT —
   the same bytes with the same Content-Type, one manifest PUT at a time per repository
   (Gitea answers concurrent ones with 500 "duplicate key").

Referrers: ``/v2/<name>/referrers/<digest>`` is probed; where it is missing (GHCR, registry
2.8 and Gitea answer 404) the fallback tags ``sha256-<hex>[.sig|.att|.sbom]`` are copied.
A dry run sends only GET and HEAD (the target client refuses anything else before sending).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import httpx

from ..credentials import mask
from ..netclient import error_text
from . import manifest as mf
from .client import (
    DigestMismatch,
    Registry,
    RegistryError,
    TransientError,
    aiter_verified,
    scope_of,
    with_digest,
)

MiB = 1024 * 1024
MIN_CHUNK = 1 * MiB


# ------------------------------------------------------------------------------------ values
@dataclass(frozen=True)
class CopyJob:
    """One image: ``source``/``target`` are repository paths (``org/name``) on the two registries."""

    source: str
    target: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()  # manifests the cluster runs by digest only (image@sha256:…): copied by digest
    all_tags: bool = False
    tag_pattern: str | None = None  # a regular expression every listed tag is matched against (fullmatch)
    mount_from: tuple[str, ...] = ()  # other target repositories that may already hold the blobs


@dataclass(frozen=True)
class Progress:
    image: str
    bytes_done: int
    bytes_total: int
    blobs_done: int
    blobs_total: int


@dataclass(frozen=True)
class CopyOptions:
    concurrency: int = 2
    chunk_size: int = 16 * MiB
    monolithic_max: int = 64 * MiB  # larger blobs go up in chunks from the start
    dry_run: bool = False
    referrers: bool = True
    owner_exists: Callable[[str], bool | None | Awaitable[bool | None]] | None = None
    progress: Callable[[Progress], None] | None = None
    progress_interval: float = 0.2


@dataclass
class TagResult:
    tag: str  # a tag, or a digest for a referrer copied by digest
    source_digest: str = ""
    target_digest: str = ""
    status: str = "pending"  # copied | present | would-copy | failed
    error: str = ""
    media_type: str = ""
    platforms: tuple[str, ...] = ()
    kind: str = "tag"  # tag | fallback (sha256-… tag) | referrer (by digest) | digest (run by digest, no tag)

    @property
    def by_digest(self) -> bool:
        """Pushed under its digest, not a tag: a referrer, or a manifest the cluster runs by digest only."""
        return self.kind in ("referrer", "digest")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["platforms"] = list(self.platforms)
        return {k: v for k, v in d.items() if v not in ("", [], ()) or k in ("status", "tag")}


@dataclass
class ImageResult:
    source: str
    target: str
    tags: list[TagResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and all(t.status != "failed" for t in self.tags)

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "ok": self.ok, "errors": list(self.errors),
                "tags": [t.to_dict() for t in self.tags],
                "blobs": {"uploaded": self.blobs_uploaded, "mounted": self.blobs_mounted,
                          "present": self.blobs_present, "bytes_uploaded": self.bytes_uploaded}}


@dataclass
class CopyReport:
    images: list[ImageResult] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.images)

    def digests(self) -> dict[str, dict[str, str]]:
        """``{"source:tag": {"source": digest, "target": digest}}`` for every tag handled."""
        out = {}
        for img in self.images:
            for t in img.tags:
                sep = "@" if t.by_digest else ":"
                out[f"{img.source}{sep}{t.tag}"] = {"target": f"{img.target}{sep}{t.tag}",
                                                    "source_digest": t.source_digest,
                                                    "target_digest": t.target_digest, "status": t.status}
        return out

    def to_dict(self) -> dict:
        return {"ok": self.ok, "dry_run": self.dry_run, "seconds": round(self.seconds, 3),
                "images": [i.to_dict() for i in self.images],
                "totals": {k: sum(getattr(i, k) for i in self.images)
                           for k in ("blobs_uploaded", "blobs_mounted", "blobs_present", "bytes_uploaded")}}


# ------------------------------------------------------------------------------------ run state
@dataclass
class _Tag:
    result: TagResult
    top: mf.Manifest | None = None
    children: list[mf.Manifest] = field(default_factory=list)

    def blobs(self) -> list[mf.Descriptor]:
        seen, out = set(), []
        for m in ([self.top] if self.top and not self.top.is_index else []) + self.children:
            for b in m.blobs:
                if b.digest not in seen:
                    seen.add(b.digest)
                    out.append(b)
        return out


class _Image:
    def __init__(self, job: CopyJob, result: ImageResult, options: CopyOptions):
        self.job, self.result, self.options = job, result, options
        self.bytes_total = self.bytes_done = 0
        self.blobs_total = self.blobs_done = 0
        self._last = 0.0

    def add_bytes(self, n: int) -> None:
        self.bytes_done += n
        self.report()

    def blob_done(self, size: int, counted: int) -> None:
        self.blobs_done += 1
        self.bytes_done += size - counted
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        cb = self.options.progress
        if cb is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.options.progress_interval:
            return
        self._last = now
        cb(Progress(self.result.target, self.bytes_done, self.bytes_total, self.blobs_done, self.blobs_total))


class Copier:
    """Copies jobs from ``source`` to ``target`` (two ``client.Registry``); ``run`` returns a CopyReport."""

    def __init__(self, source: Registry, target: Registry, options: CopyOptions | None = None):
        self.source, self.target = source, target
        self.options = options or CopyOptions()
        if self.options.dry_run:
            target.read_only = True
        self._sem = asyncio.Semaphore(max(1, self.options.concurrency))
        self._meta = asyncio.Semaphore(8)
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}  # (target repo, digest) → its transfer
        self._first: dict[str, tuple[str, asyncio.Task]] = {}  # digest → the first repo that fetched it
        self._where: dict[str, set[str]] = {}  # digest → target repos known to hold it
        self._locks: dict[str, asyncio.Lock] = {}
        self._chunked_only = False  # a proxy in front of the target refused or cut a whole-blob PUT
        self._chunk = self.options.chunk_size
        self._referrers_api: bool | None = None

    # ------------------------------------------------------------------ the run
    async def run(self, jobs: list[CopyJob]) -> CopyReport:
        t0 = time.monotonic()
        report = CopyReport(dry_run=self.options.dry_run)
        images = [_Image(j, ImageResult(f"{self.source.name}/{j.source}", f"{self.target.name}/{j.target}"),
                         self.options) for j in jobs]
        report.images = [i.result for i in images]
        await asyncio.gather(*(self._image(i) for i in images))
        report.seconds = time.monotonic() - t0
        for res in report.images:  # a second belt: no credential or token text in any reason, whatever said it
            res.errors = [self._mask(e) for e in res.errors]
            for t in res.tags:
                t.error = self._mask(t.error)
        return report

    def _mask(self, text: str) -> str:
        if not text:
            return text
        secrets = [r.credentials.secret for r in (self.source, self.target) if r.credentials is not None]
        secrets += [tok for r in (self.source, self.target) for tok in r.tokens()]
        return mask(text, *secrets)

    def _scopes(self, repo: str, *extra: str) -> tuple[str, ...]:
        # push first: some registries read only the first scope of a token request
        mine = scope_of(repo, "pull") if self.options.dry_run else scope_of(repo, "push,pull")
        return (mine, *(scope_of(r, "pull") for r in extra))

    async def _image(self, img: _Image) -> None:
        try:
            await self._image_inner(img)
        except (RegistryError, mf.ManifestError) as e:
            img.result.errors.append(str(e))
        except httpx.HTTPError as e:  # a transport failure outside the retried requests: one line, no traceback
            img.result.errors.append(f"{img.result.source}: {error_text(e)}")

    async def _image_inner(self, img: _Image) -> None:
        job, res = img.job, img.result
        owner = job.target.split("/", 1)[0]
        if self.options.owner_exists is not None:
            exists = self.options.owner_exists(owner)
            if inspect.isawaitable(exists):
                exists = await exists
            if exists is False:
                res.errors.append(f"{res.target}: the owner {owner!r} does not exist on the target; create the "
                                  f"organisation {owner!r} in Gitea (or correct gitea.org in the plan)")
                return
        listed: list[str] | None = None
        if job.all_tags or job.tag_pattern or self.options.referrers:
            listed = await self.source.tags(job.source)
        names = list(dict.fromkeys(job.tags))
        if job.all_tags or job.tag_pattern:
            pattern = re.compile(job.tag_pattern) if job.tag_pattern else None
            names += [t for t in listed or [] if t not in names and (pattern is None or pattern.fullmatch(t))
                      and not _is_fallback(t)]
        if not names and not job.digests:
            res.errors.append(f"{res.source}: no tag selected (give tags, --all-tags or --tags REGEX)")
            return
        # tags that differ only in case collide in Gitea, which lowercases them
        by_lower: dict[str, list[str]] = {}
        for n in names:
            by_lower.setdefault(n.lower(), []).append(n)
        tags: list[_Tag] = []
        for n in names:
            t = _Tag(TagResult(n))
            group = by_lower[n.lower()]
            if len(group) > 1:
                t.result.status = "failed"
                t.result.error = (f"tags {', '.join(group)} differ only in case: Gitea stores tags lowercase, so "
                                  "they would overwrite each other; rename all but one on the source or select one")
            tags.append(t)
        tags += [_Tag(TagResult(d, kind="digest")) for d in dict.fromkeys(job.digests)]
        res.tags = [t.result for t in tags]
        live = [t for t in tags if t.result.status != "failed"]
        await asyncio.gather(*(self._resolve(img, t) for t in live))
        # referrers: the API where the source has it, else the fallback tags present in the listing
        extra: list[_Tag] = []
        if self.options.referrers:
            known = {t.result.tag for t in tags}
            for t in list(live):
                if t.top is None or t.result.status == "failed":
                    continue
                digests = [t.top.digest] + [c.digest for c in t.children]
                refs = await self._referrers(job.source, t.top.digest)
                for d in refs:
                    if d not in known:
                        known.add(d)
                        extra.append(_Tag(TagResult(d, kind="referrer")))
                for d in digests:
                    for ft in mf.fallback_tags(d):
                        if ft in (listed or ()) and ft not in known:
                            known.add(ft)
                            extra.append(_Tag(TagResult(ft, kind="fallback")))
            await asyncio.gather(*(self._resolve(img, t) for t in extra))
            res.tags += [t.result for t in extra]
        todo = [t for t in live + extra if t.result.status == "pending"]
        # progress totals: every blob the pending tags need, once
        sizes: dict[str, int] = {}
        for t in todo:
            for b in t.blobs():
                sizes.setdefault(b.digest, b.size)
        img.bytes_total, img.blobs_total = sum(sizes.values()), len(sizes)
        img.report(force=True)
        await asyncio.gather(*(self._copy_tag(img, t) for t in todo))
        img.report(force=True)

    async def _resolve(self, img: _Image, t: _Tag) -> None:
        """GET the manifest (and an index's children), then HEAD the target: present, or pending."""
        job, r = img.job, t.result
        try:
            async with self._meta:
                got = await self.source.get_manifest(job.source, r.tag)
            if got is None:
                r.status, r.error = "failed", f"{img.result.source}:{r.tag} is not on the source"
                return
            body, media, digest = got
            t.top = mf.parse(body, media, digest, f"{img.result.source}:{r.tag}")
            r.source_digest, r.media_type = digest, t.top.media_type
            async with self._meta:
                have = await self.target.head_manifest(job.target, r.tag, scopes=self._scopes(job.target))
            if have == digest:
                r.status, r.target_digest = "present", have
                if t.top.is_index:
                    r.platforms = tuple(c.platform for c in t.top.children)
                return
            if t.top.is_index:
                r.platforms = tuple(c.platform for c in t.top.children)
                kids = await asyncio.gather(*(self._child(job.source, c) for c in t.top.children))
                for c, m in zip(t.top.children, kids, strict=True):
                    if m.is_index:
                        r.status = "failed"
                        r.error = (f"{img.result.source}:{r.tag} is an index whose entry {c.digest[:19]}… is itself "
                                   "an index: Gitea refuses nested indexes; push the platforms as one flat index")
                        return
                t.children = list(kids)
            r.status = "pending"
        except (RegistryError, mf.ManifestError) as e:
            r.status, r.error = "failed", str(e)
        except httpx.HTTPError as e:
            r.status, r.error = "failed", f"{img.result.source}:{r.tag}: {error_text(e)}"

    async def _child(self, repo: str, d: mf.Descriptor) -> mf.Manifest:
        async with self._meta:
            got = await self.source.get_manifest(repo, d.digest)
        if got is None:
            raise RegistryError(f"{self.source.name}/{repo}@{d.digest}: an index entry missing on the source")
        body, media, digest = got
        if len(body) != d.size:
            raise DigestMismatch(f"{self.source.name}/{repo}@{d.digest}: {len(body)} bytes, the index says {d.size}")
        return mf.parse(body, media or d.media_type, digest, f"{self.source.name}/{repo}@{d.digest}")

    async def _referrers(self, repo: str, digest: str) -> list[str]:
        if self._referrers_api is False:
            return []
        body = await self.source.referrers(repo, digest)
        if body is None:
            self._referrers_api = False
            return []
        self._referrers_api = True
        try:
            index = mf.parse(body, mf.OCI_INDEX, mf.sha256_digest(body), "referrers")
        except mf.ManifestError:
            return []
        return [c.digest for c in index.children]

    # ------------------------------------------------------------------ one tag
    async def _copy_tag(self, img: _Image, t: _Tag) -> None:
        job, r = img.job, t.result
        blobs = t.blobs()
        outcomes = await asyncio.gather(*(self._blob(img, b) for b in blobs), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for o in failed:
            if not isinstance(o, (RegistryError, httpx.HTTPError, mf.ManifestError)):
                raise o
        if failed:
            r.status, r.error = "failed", f"{img.result.source}:{r.tag}: {failed[0]} (no manifest written)"
            return
        if self.options.dry_run:
            r.status = "would-copy"
            return
        scopes = self._scopes(job.target)
        lock = self._locks.setdefault(job.target, asyncio.Lock())
        try:
            async with lock:  # Gitea: concurrent manifest PUTs to one repository fail with "duplicate key"
                for m in t.children:
                    got = await self.target.put_manifest(job.target, m.digest, m.body, m.media_type, scopes=scopes)
                    if got and got != m.digest:
                        raise RegistryError(f"{img.result.target}@{m.digest}: the target stored it as {got}")
                ref = r.source_digest if r.by_digest else r.tag
                got = await self.target.put_manifest(job.target, ref, t.top.body, t.top.media_type, scopes=scopes)
        except RegistryError as e:
            r.status, r.error = "failed", str(e)
            return
        if got and got != r.source_digest:
            r.status, r.error = "failed", f"the target stored {img.result.target}:{r.tag} as {got}, not " \
                                          f"{r.source_digest}: it rewrote the manifest"
            return
        r.status, r.target_digest = "copied", got or r.source_digest

    # ------------------------------------------------------------------ one blob
    def _blob(self, img: _Image, d: mf.Descriptor) -> asyncio.Task:
        key = (img.job.target, d.digest)
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._transfer(img, d))
            self._tasks[key] = task
            self._first.setdefault(d.digest, (img.job.target, task))
        return task

    def _held(self, digest: str, repo: str) -> None:
        self._where.setdefault(digest, set()).add(repo)

    async def _transfer(self, img: _Image, d: mf.Descriptor) -> str:
        job, res = img.job, img.result
        dst = job.target
        if await self.target.has_blob(dst, d.digest, scopes=self._scopes(dst)):
            self._held(d.digest, dst)
            res.blobs_present += 1
            img.blob_done(d.size, 0)
            return "present"
        if self.options.dry_run:
            img.blob_done(d.size, 0)
            return "would-upload"
        first = self._first.get(d.digest)
        if first is not None and first[0] != dst and not self._where.get(d.digest):
            await asyncio.wait([first[1]])  # another repository is fetching it: mount it from there afterwards
        candidates = [r for r in sorted(self._where.get(d.digest, ())) if r != dst]
        candidates += [r for r in job.mount_from if r != dst and r not in candidates]
        for other in candidates[:4]:
            if await self._mount(dst, other, d):
                self._held(d.digest, dst)
                res.blobs_mounted += 1
                img.blob_done(d.size, 0)
                return "mounted"
        async with self._sem:
            sent = await self._upload(img, d)
        self._held(d.digest, dst)
        res.blobs_uploaded += 1
        res.bytes_uploaded += d.size
        img.blob_done(d.size, sent)
        return "uploaded"

    async def _mount(self, dst: str, other: str, d: mf.Descriptor) -> bool:
        scopes = self._scopes(dst, other)
        try:
            resp = await self.target.start_upload(dst, scopes=scopes, mount=d.digest, source_repo=other)
        except RegistryError:
            return False
        if resp.status_code == 201:
            return True
        if resp.headers.get("location"):  # a 202: the registry opened an upload instead of mounting
            await self.target.cancel_upload(resp.headers["location"], scopes=scopes)
        return False

    async def _open(self, dst: str, scopes) -> str:
        resp = await self.target.start_upload(dst, scopes=scopes)
        loc = resp.headers.get("location")
        if resp.status_code != 202 or not loc:
            raise RegistryError(f"{self.target.name}: POST /v2/{dst}/blobs/uploads/ answered {resp.status_code} "
                                "without an upload location", status=resp.status_code)
        return loc

    def _what(self, img: _Image, d: mf.Descriptor) -> str:
        return f"blob {d.digest[:19]}… of {img.result.source}"

    async def _upload(self, img: _Image, d: mf.Descriptor) -> int:
        """Upload one blob; returns the bytes counted into progress."""
        if d.size <= self.options.monolithic_max and not self._chunked_only:
            sent, done = await self._whole(img, d)
            if done:
                return sent
            img.add_bytes(-sent)  # the whole-blob PUT did not land: start again in chunks
        return await self._chunked(img, d)

    async def _whole(self, img: _Image, d: mf.Descriptor) -> tuple[int, bool]:
        """POST, then one streamed PUT. (bytes counted, landed?); not landed: fall back to chunks."""
        dst, scopes = img.job.target, self._scopes(img.job.target)
        loc = await self._open(dst, scopes)
        counted = 0
        src = _prefetch(self.source.blob_pieces(img.job.source, d.digest))

        async def body():
            nonlocal counted
            async for piece in aiter_verified(src, d.digest, d.size, self._what(img, d)):
                counted += len(piece)
                img.add_bytes(len(piece))
                yield piece
        try:
            resp = await self.target.put_stream(loc, body(), d.size, d.digest, scopes=scopes)
        except DigestMismatch:
            await self.target.cancel_upload(loc, scopes=scopes)
            raise
        except httpx.TransportError:
            # cut off (a proxy's time or size limit) or reset: the rest goes in chunks, for every later blob too
            self._chunked_only = True
            await self.target.cancel_upload(loc, scopes=scopes)
            return counted, False
        finally:
            await src.aclose()
        if resp.status_code in (201, 204):
            return counted, True
        await self.target.cancel_upload(loc, scopes=scopes)
        if resp.status_code in (413, 408, 504, 502):
            self._chunked_only = True
            return counted, False
        if resp.status_code in (401, 500, 503):
            return counted, False
        code = resp.text[:160] if resp.status_code < 500 else ""
        raise RegistryError(f"{self.target.name}: PUT {dst} blob {d.digest[:19]}… answered {resp.status_code} "
                            f"{_short(code)}".rstrip(), status=resp.status_code)

    async def _chunked(self, img: _Image, d: mf.Descriptor) -> int:
        """POST, then PATCH chunk after chunk with Content-Range, then the closing PUT with the digest."""
        dst, scopes = img.job.target, self._scopes(img.job.target)
        loc = await self._open(dst, scopes)
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        size = self._chunk
        src = self.source.blob_pieces(img.job.source, d.digest)

        async def reader():
            # reads the next chunk while the current one is sent: the download and the upload overlap
            try:
                parts: list[bytes] = []
                have = 0
                async for piece in aiter_verified(src, d.digest, d.size, self._what(img, d)):
                    parts.append(piece)
                    have += len(piece)
                    if have >= size:
                        await queue.put(b"".join(parts))  # about ``size``: whole pieces, one copy
                        parts, have = [], 0
                if parts:
                    await queue.put(b"".join(parts))
                await queue.put(None)
            except Exception as e:  # noqa: BLE001 - handed to the uploader, which raises it
                await queue.put(e)

        task = asyncio.ensure_future(reader())
        offset = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                loc, offset = await self._patch(img, dst, loc, item, offset, scopes)
            await self.target.request("PUT", with_digest(self.target.url(loc), d.digest), scopes=scopes,
                                      headers={"Content-Length": "0"}, content=b"", ok=(201, 204))
            return offset
        except BaseException:
            await self.target.cancel_upload(loc, scopes=scopes)
            raise
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await src.aclose()

    async def _patch(self, img: _Image, dst: str, loc: str, chunk: bytes, offset: int, scopes) -> tuple[str, int]:
        """Send ``chunk`` at ``offset``; (next location, next offset). 413: smaller chunks from now on; 416
        or a cut connection: ask the upload's status and send what the registry does not have."""
        pos, stalls = 0, 0
        while stalls < 8:
            if pos >= len(chunk):
                return loc, offset
            piece = chunk[pos:pos + self._chunk]
            start = offset
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece)),
                       "Content-Range": f"{start}-{start + len(piece) - 1}"}
            try:
                resp = await self.target.request("PATCH", loc, scopes=scopes, headers=headers, content=piece,
                                                 ok=(202, 204, 413, 416), retry_transport=False)
            except TransientError:
                resp = None
            if resp is not None and resp.status_code in (202, 204):
                loc = resp.headers.get("location") or loc
                offset += len(piece)
                pos += len(piece)
                img.add_bytes(len(piece))
                continue
            stalls += 1
            if resp is not None and resp.status_code == 413:
                if self._chunk <= MIN_CHUNK:
                    raise RegistryError(f"{self.target.name}: PATCH {dst} answered 413 even for "
                                        f"{len(piece)} bytes: raise the proxy's body size limit", status=413)
                self._chunk = max(MIN_CHUNK, self._chunk // 2)
                continue
            # 416 or a cut connection: where does the registry stand?
            status = await self.target.request("GET", loc, scopes=scopes, ok=(200, 204))
            loc = status.headers.get("location") or loc
            have = _range_end(status.headers.get("range"))
            if have < offset or have > offset + len(piece):
                raise RegistryError(f"{self.target.name}: the upload to {dst} holds {have} bytes where {offset} "
                                    "were sent; it cannot be resumed", status=416)
            moved = have - offset
            offset, pos = have, pos + moved
            img.add_bytes(moved)
        raise RegistryError(f"{self.target.name}: the upload to {dst} made no progress")


async def _prefetch(pieces, depth: int = 4):
    """``pieces`` read ahead by up to ``depth`` items in a task of their own, so the next piece is being
    read while the current one is sent."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=depth)
    done = object()

    async def fill():
        try:
            async for piece in pieces:
                await queue.put(piece)
            await queue.put(done)
        except Exception as e:  # noqa: BLE001 - raised where the pieces are consumed
            await queue.put(e)
    task = asyncio.ensure_future(fill())
    try:
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pieces.aclose()


def _range_end(value: str | None) -> int:
    """Bytes an upload holds, from its ``Range: 0-N`` header (N inclusive); 0 when it says nothing."""
    m = re.match(r"(?:bytes=)?(\d+)-(\d+)", value or "")
    return int(m.group(2)) + 1 if m else 0


def _is_fallback(tag: str) -> bool:
    return bool(re.fullmatch(r"sha256-[a-f0-9]{64}(\.(sig|att|sbom))?", tag))


def _short(text: str) -> str:
    from .client import error_detail
    code, message = error_detail(text.encode())
    return f"{code}: {message}" if code else ""


def copy_jobs(plan, refs: dict[str, tuple[str, ...]], *, all_tags: bool = False,
              tag_pattern: str | None = None) -> list[CopyJob]:
    """One ``CopyJob`` per plan image (its tags, and its digest-only references copied by digest, the same bytes);
    ``refs``: plan image source → tags or digests. Images with nothing selected are left out."""
    jobs = []
    for img in plan.images:
        chosen = refs.get(img.source, ())
        job = CopyJob(img.source_repo, img.target_repo, tags=tuple(t for t in chosen if not t.startswith("sha256:")),
                      digests=tuple(t for t in chosen if t.startswith("sha256:")), all_tags=all_tags,
                      tag_pattern=tag_pattern,
                      mount_from=tuple(j.target_repo for j in plan.images if j.target_repo != img.target_repo))
        if job.tags or job.digests or all_tags or tag_pattern:
            jobs.append(job)
    return jobs


async def copy(source: Registry, target: Registry, jobs: list[CopyJob], options: CopyOptions | None = None
               ) -> CopyReport:
    """Run ``jobs`` from ``source`` to ``target``; the report has source → target digests per tag."""
    return await Copier(source, target, options).run(jobs)


__all__ = ["Copier", "CopyJob", "copy_jobs", "CopyOptions", "CopyReport", "ImageResult", "TagResult", "Progress", "copy"]
