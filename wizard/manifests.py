"""Surgical rewrite of the operator's manifest files [Step 6]: GHCR images → Gitea, old pull secret → new.

The files are the operator's: comments, key order, quoting, indentation, anchors and line
endings must survive byte for byte. So nothing is dumped back: PyYAML's composer gives every
scalar's position in the original text (``start_mark.index``/``end_mark.index``) and only the
changed characters are spliced in — the GHCR prefix of an image (its tag or digest stays
untouched) and the secret's name, in whatever quoting style the file used.

What is looked at, in every document of a file (so Deployments, StatefulSets, DaemonSets,
Jobs, CronJobs, Pods, init containers, CRDs and Helm-style values alike):
- every ``image:`` scalar (and ``image: {repository: …}`` as Helm values write it);
- every ``imagePullSecrets:`` entry naming the plan's old pull secret;
- a kustomization's ``images:`` entries (``name`` and ``newName``).

A GHCR image the plan does not list is reported with its position, never guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .fsutil import write_atomic
from .masking import mask_yaml_text
from .plan import Image, Plan

SOURCE_REGISTRY = "ghcr.io/"
MANIFEST_SUFFIXES = (".yaml", ".yml")
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
STR_TAG = "tag:yaml.org,2002:str"


class ManifestError(Exception):
    """A file that cannot be rewritten safely: unreadable, not UTF-8, or not YAML (with the position)."""

    def __init__(self, path: str, problem: str, line: int | None = None, column: int | None = None):
        where = f"{path}:{line}:{column}" if line is not None else path
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line, self.column = path, problem, line, column


@dataclass(frozen=True)
class Edit:
    """One spliced change: text[start:end] (== old) becomes new."""

    start: int
    end: int
    old: str
    new: str
    line: int  # 1-based, of the scalar
    column: int
    what: str  # "image" | "pull secret" | "kustomize image"


@dataclass(frozen=True)
class Note:
    """Something the operator should know about a file that the rewrite did not change."""

    line: int
    column: int
    message: str
    kind: str  # "unknown-image" | "kept" | "not-surgical"


@dataclass(frozen=True)
class Rewrite:
    """One file's planned rewrite: the text before and after, the edits and the notes."""

    path: str
    before: str
    after: str
    edits: tuple[Edit, ...] = ()
    notes: tuple[Note, ...] = field(default=())
    root: str | None = None
    images: tuple[str, ...] = ()  # the plan images' references the file holds (image: scalars), as written  # the tree the operator named: writes never leave it (see fsutil.write_atomic)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def unknown_images(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.kind == "unknown-image")

    def diff(self, label: str | None = None) -> str:
        """Unified diff of the file (line endings shown as lines, whatever they are)."""
        name = label or self.path
        before, after = mask_yaml_text(self.before), mask_yaml_text(self.after)  # a repo's Secret manifests too
        # git's a/ b/ prefixes are for paths relative to a tree; an absolute path reads as itself (no 'a//tmp')
        old, new = (name, name) if name.startswith("/") else (f"a/{name}", f"b/{name}")
        return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), old, new, lineterm=""))

    def notes_text(self, label: str | None = None) -> list[str]:
        name = label or self.path
        return [f"{name}:{n.line}:{n.column}: {n.message}" for n in self.notes]

    def write(self) -> None:
        """Atomically replace the file (temp file + rename, mode kept) if it still holds `before`."""
        current = read_text(self.path)
        if current != self.before:
            raise ManifestError(self.path, "changed on disk since it was read; nothing written — run again")
        write_atomic(self.path, self.after.encode("utf-8"), within=self.root)


# ------------------------------------------------------------------ images
def plan_image(image: str, plan: Plan) -> Image | None:
    """The plan's image whose GHCR source this reference names (any tag or digest), else None."""
    for img in plan.images:
        if image == img.source or image.startswith((img.source + ":", img.source + "@")):
            return img
    return None


def split_ref(image: str, plan: Plan) -> tuple[Image, str, str] | None:
    """(plan image, tag, digest) of a container image that is a plan image on GHCR or on Gitea, else None.
    A reference without tag or digest is ``latest``; a digest-only reference has tag ""."""
    for img in plan.images:
        for base in (img.source, img.target):
            if image == base or image.startswith((base + ":", base + "@")):
                rest = image[len(base):]
                ref, _, digest = rest.partition("@")
                tag = ref[1:] if ref.startswith(":") else ""
                if not tag and not digest:
                    tag = "latest"
                return img, tag, digest
    return None


Pins = dict[tuple[str, str], str]  # (plan image source, tag) → the digest Gitea holds for it (workloads.pin_digests)


def migrated_ref(image: str, plan: Plan, pins: Pins | None = None) -> str | None:
    """The Gitea reference for a plan image, or None when ``image`` needs no change.

    ``pins`` None: a GHCR reference gets the target's prefix, its tag or digest kept. ``pins`` given
    (``workloads.pin_digests``): GHCR and Gitea references alike become ``<target>@sha256:…`` — their own
    digest, else the pinned digest of their tag; a GHCR tag without a pin keeps the tag form."""
    hit = split_ref(image, plan)
    if hit is None:
        return None
    img, tag, digest = hit
    on_source = image == img.source or image.startswith((img.source + ":", img.source + "@"))
    new = img.target + image[len(img.source):] if on_source else image
    if pins is not None:
        pin = digest or pins.get((img.source, tag))
        if pin:
            new = f"{img.target}@{pin}"
    return new if new != image else None


def is_source_image(image: str) -> bool:
    return image.startswith(SOURCE_REGISTRY)


# ------------------------------------------------------------------ the rewrite
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def read_text(path: str | os.PathLike) -> str:
    try:
        st = os.stat(path)  # before opening: a FIFO would block the open, a device would stream forever
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(str(path), "not a regular file (a device, FIFO or socket); not touched")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(str(path), f"{st.st_size} bytes: too big for a manifest (the limit is "
                                f"{MAX_MANIFEST_BYTES // (1024 * 1024)} MiB); not touched")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ManifestError(str(path), "file not found") from None
    except OSError as e:
        raise ManifestError(str(path), f"cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8")  # no newline translation: CRLF stays CRLF
    except UnicodeDecodeError as e:
        raise ManifestError(str(path), f"not UTF-8 text (byte {e.start}); not touched") from None


def rewrite_text(text: str, plan: Plan, path: str = "<text>", pins: Pins | None = None) -> Rewrite:
    """The rewrite of one file's text (``pins``: as ``migrated_ref``); raises ManifestError (file, line, column) when it is not YAML."""
    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p) or "not valid YAML"
        raise ManifestError(path, f"not valid YAML: {problem}; not touched",
                            mark.line + 1 if mark else None, mark.column + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ManifestError(path, f"not valid YAML: {e}; not touched") from None
    finder = _Finder(text, plan, Path(path).name, pins)
    for doc in docs:
        finder.document(doc)
    edits = sorted(finder.edits.values(), key=lambda e: e.start)
    out = text
    for e in reversed(edits):
        out = out[:e.start] + e.new + out[e.end:]
    if edits:
        try:  # belt and braces: what we write must still be YAML
            list(yaml.compose_all(out, Loader=yaml.SafeLoader))
        except yaml.YAMLError as e:  # pragma: no cover - a bug in the splicer, never the operator's file
            raise ManifestError(path, f"internal error: the rewrite would not parse ({e}); not touched") from None
    notes = sorted(finder.notes.values(), key=lambda n: (n.line, n.column))
    return Rewrite(path, text, out, tuple(edits), tuple(notes), images=tuple(dict.fromkeys(finder.images)))


def rewrite_file(path: str | os.PathLike, plan: Plan, pins: Pins | None = None) -> Rewrite:
    return rewrite_text(read_text(path), plan, str(path), pins)


class _Finder:
    """Walks composed nodes; records edits (deduplicated: an alias is the anchored node) and notes."""

    def __init__(self, text: str, plan: Plan, filename: str, pins: Pins | None = None):
        self.text, self.plan, self.filename, self.pins = text, plan, filename, pins
        self.images: list[str] = []
        self.edits: dict[tuple[int, int], Edit] = {}
        self.notes: dict[tuple[int, int, str], Note] = {}
        self._seen: set[int] = set()

    def document(self, doc: Node) -> None:
        if isinstance(doc, MappingNode) and self._is_kustomization(doc):
            images = _get(doc, "images")
            if isinstance(images, SequenceNode):
                for entry in images.value:
                    if isinstance(entry, MappingNode):
                        for key in ("name", "newName"):
                            v = _get(entry, key)
                            if _is_str(v):
                                self._image(v, "kustomize image")
        self._walk(doc)

    def _is_kustomization(self, doc: MappingNode) -> bool:
        kind = _get(doc, "kind")
        if _is_str(kind):
            return kind.value == "Kustomization"
        return self.filename in KUSTOMIZATION_NAMES

    def _walk(self, node: Node) -> None:
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        if isinstance(node, SequenceNode):
            for item in node.value:
                self._walk(item)
            return
        if not isinstance(node, MappingNode):
            return
        for k, v in node.value:
            key = k.value if isinstance(k, ScalarNode) else None
            if key == "image":
                if _is_str(v):
                    self._image(v, "image")
                elif isinstance(v, MappingNode):  # Helm values: image: {repository: ghcr.io/org/name, tag: …}
                    repo = _get(v, "repository")
                    if _is_str(repo) and is_source_image(repo.value):
                        self._image(repo, "image")
            elif key == "imagePullSecrets" and isinstance(v, SequenceNode):
                self._pull_secrets(v)
            self._walk(v)

    def _image(self, node: ScalarNode, what: str) -> None:
        value = node.value
        if what == "image" and split_ref(value, self.plan) is not None:
            self.images.append(value)
            if self.pins is not None:  # workloads.pin_digests: the whole reference becomes <target>@sha256:…
                new = migrated_ref(value, self.plan, self.pins)
                if new is not None:
                    self._splice(node, value, new, what)
                return
        img = plan_image(value, self.plan)
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if img is None:
            if is_source_image(value):
                self.notes[(line, col, "unknown-image")] = Note(
                    line, col, f"{value} is on GHCR but not in the plan's images; left as it is (add it to "
                               "images: to migrate it)", "unknown-image")
            return
        self._splice(node, img.source, img.target, what)

    def _pull_secrets(self, seq: SequenceNode) -> None:
        p = self.plan
        names = []
        for entry in seq.value:
            n = _get(entry, "name") if isinstance(entry, MappingNode) else entry
            if _is_str(n):
                names.append(n)
        olds = [n for n in names if n.value == p.old_pull_secret]
        if not olds:
            return
        if any(n.value == p.pull_secret for n in names):
            for n in olds:
                line, col = n.start_mark.line + 1, n.start_mark.column + 1
                self.notes[(line, col, "kept")] = Note(
                    line, col, f"imagePullSecrets names both {p.old_pull_secret} and {p.pull_secret}; renaming "
                               f"would duplicate an entry: remove {p.old_pull_secret} by hand", "kept")
            return
        for n in olds:
            self._splice(n, p.old_pull_secret, p.pull_secret, "pull secret")

    def _splice(self, node: ScalarNode, old: str, new: str, what: str) -> None:
        """Replace `old` (a prefix of the scalar's value) by `new` where the value sits in the original text."""
        s, e = node.start_mark.index, node.end_mark.index
        seg = self.text[s:e]
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        literal = _literal(node)
        if literal is None or not seg.endswith(literal[0]):
            self.notes[(line, col, "not-surgical")] = Note(
                line, col, f"{node.value} is written in a form that cannot be changed in place (folded, escaped "
                           f"or block scalar); change it to {new + node.value[len(old):]} by hand", "not-surgical")
            return
        shown, offset = literal
        at = s + len(seg) - len(shown) + offset  # where the value's first character sits in the text
        if self.text[at:at + len(old)] != old:  # pragma: no cover - literal() guarantees it
            return
        self.edits[(at, at + len(old))] = Edit(at, at + len(old), old, new, line, col, what)


def _literal(node: ScalarNode) -> tuple[str, int] | None:
    """How the scalar's value is written in the text, and the offset of its first character in that."""
    v = node.value
    if "\n" in v or "\r" in v:
        return None
    if node.style is None:
        return v, 0
    if node.style == "'":
        return (None if "'" in v else ("'" + v + "'", 1))
    if node.style == '"':
        if "\\" in v or '"' in v:
            return None
        return '"' + v + '"', 1
    return None


def _get(mapping: Node | None, key: str) -> Node | None:
    """A mapping's value for key, following YAML merge keys (<<) as the constructor would."""
    if not isinstance(mapping, MappingNode):
        return None
    merged = []
    for k, v in mapping.value:
        if isinstance(k, ScalarNode):
            if k.value == key and k.tag != "tag:yaml.org,2002:merge":
                return v
            if k.tag == "tag:yaml.org,2002:merge":
                merged += v.value if isinstance(v, SequenceNode) else [v]
    for m in merged:
        found = _get(m, key)
        if found is not None:
            return found
    return None


def _is_str(node: Node | None) -> bool:
    return isinstance(node, ScalarNode) and node.tag == STR_TAG


# ------------------------------------------------------------------ files and folders
def collect(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to look at: files as given, folders searched for *.yaml/*.yml (hidden folders skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [Path(root) / f for f in sorted(files) if f.endswith(MANIFEST_SUFFIXES)]
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def plan_paths(plan: Plan) -> list[Path]:
    """The plan's workloads.manifests, relative paths taken from the plan file's folder."""
    return [resolve(plan, m) for m in plan.manifests]


def resolve(plan: Plan, path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or not plan.source_path:
        return p
    return Path(plan.source_path).resolve().parent / p


@dataclass
class Scan:
    """Every file's rewrite, and the files that could not be read or parsed."""

    rewrites: list[Rewrite] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)

    @property
    def changed(self) -> list[Rewrite]:
        return [r for r in self.rewrites if r.changed]


def scan(paths: Iterable[str | os.PathLike], plan: Plan, pins: Pins | None = None) -> Scan:
    out = Scan()
    for p in map(Path, paths):
        if not p.exists():
            out.errors.append(ManifestError(str(p), "no such file or folder"))
            continue
        root = p if p.is_dir() else p.parent
        for f in collect([p]):
            try:
                out.rewrites.append(dataclasses.replace(rewrite_file(f, plan, pins), root=str(root)))
            except ManifestError as e:
                out.errors.append(e)
    return out


