"""Image references as the distribution grammar writes them: ``[host[:port]/]path[:tag][@digest]``.

The grammar is distribution's ``reference/regexp.go``: the first component is a host only when it
holds a dot or a colon or is ``localhost``; path components are lowercase alphanumerics joined by
``.``, ``_``, ``__`` or dashes; a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is
``algorithm:hex``. A bare name means Docker Hub (``docker.io/library/…``), as docker and containerd
read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH_RE = re.compile(rf"{COMPONENT}(?:/{COMPONENT})*")
HOST_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
DOCKER_HUB = "docker.io"
MAX_NAME = 255


class ReferenceError(ValueError):
    """A reference the grammar refuses; the message names the reference and what is wrong."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str  # path below the host: org/name
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def owner(self) -> str:
        """The first path component: Gitea's organisation or user, GHCR's owner."""
        return self.repository.split("/", 1)[0]


def parse(text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse ``[host[:port]/]path[:tag][@digest]``; raises ReferenceError naming the fault."""
    if not isinstance(text, str) or not text:
        raise ReferenceError("image reference: empty; write HOST/ORG/NAME[:TAG][@sha256:DIGEST]")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise ReferenceError(f"image reference {text!r}: the digest {digest!r} is not ALGORITHM:HEX")
        if digest.startswith("sha256:") and not SHA256_RE.fullmatch(digest):
            raise ReferenceError(f"image reference {text!r}: a sha256 digest is 64 lowercase hex characters")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.fullmatch(tag):
            raise ReferenceError(f"image reference {text!r}: the tag {tag!r} is not valid (letters, digits, _ . -; "
                                 "at most 128, not starting with . or -)")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
        if not HOST_RE.fullmatch(registry):
            raise ReferenceError(f"image reference {text!r}: {registry!r} is not a registry host[:port]")
    else:
        registry, path = default_registry, rest
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if not path or not PATH_RE.fullmatch(path):
        raise ReferenceError(f"image reference {text!r}: the path {path!r} must be lowercase components "
                             "(a-z 0-9, joined by . _ __ -) separated by /")
    if len(f"{registry}/{path}") > MAX_NAME:
        raise ReferenceError(f"image reference {text!r}: longer than {MAX_NAME} characters")
    return Reference(registry, path, tag, digest)


def is_tag(value: str) -> bool:
    return bool(TAG_RE.fullmatch(value))


__all__ = ["Reference", "ReferenceError", "parse", "is_tag", "SHA256_RE"]
