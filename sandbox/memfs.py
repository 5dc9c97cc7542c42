"""A tiny in-memory filesystem: one per simulated node or pod.

The sandbox creates a thousand and more of these, each holding a handful of files, so
the whole state is two plain dicts keyed by normalised absolute path. ``/dev/null``
behaves as on a real system (reads empty, swallows writes) without being stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

DEV_NULL = "/dev/null"


@dataclass(slots=True)
class FileEntry:
    data: bytes
    mode: int
    mtime: float


class FSError(Exception):
    """A failed filesystem call; ``str()`` is the errno text, e.g. ``No such file or directory``."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


ENOENT = "No such file or directory"
EISDIR = "Is a directory"
ENOTDIR = "Not a directory"
EEXIST = "File exists"
ENOTEMPTY = "Directory not empty"
EBUSY = "Device or resource busy"


def normpath(path: str) -> str:
    """Collapse ``//``, ``.`` and ``..``; relative paths count from ``/`` (the shell never changes directory)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


class MemFS:
    """Regular files and directories with modes and mtimes; no links, owners or devices besides /dev/null."""

    __slots__ = ("_clock", "_files", "_dirs")

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._files: dict[str, FileEntry] = {}
        self._dirs: dict[str, FileEntry] = {"/": FileEntry(b"", 0o755, clock())}

    # -- queries ---------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        p = normpath(path)
        return p in self._files or p in self._dirs or p == DEV_NULL

    def isfile(self, path: str) -> bool:
        return normpath(path) in self._files

    def isdir(self, path: str) -> bool:
        return normpath(path) in self._dirs

    def stat(self, path: str) -> FileEntry:
        p = normpath(path)
        if p == DEV_NULL:
            return FileEntry(b"", 0o666, 0.0)
        entry = self._files.get(p) or self._dirs.get(p)
        if entry is None:
            self._check_parent(p)
            raise FSError(ENOENT, p)
        return FileEntry(entry.data, entry.mode, entry.mtime)

    def read(self, path: str) -> bytes:
        p = normpath(path)
        if p == DEV_NULL:
            return b""
        if p in self._files:
            return self._files[p].data
        if p in self._dirs:
            raise FSError(EISDIR, p)
        self._check_parent(p)
        raise FSError(ENOENT, p)

    def listdir(self, path: str) -> list[str]:
        p = normpath(path)
        if p not in self._dirs:
            if p in self._files:
                raise FSError(ENOTDIR, p)
            raise FSError(ENOENT, p)
        prefix = p.rstrip("/") + "/"
        return sorted(k[len(prefix) :] for k in (*self._files, *self._dirs) if k != p and _parent(k) == p)

    def paths(self) -> list[str]:
        """Every file and directory path, sorted (for globbing)."""
        return sorted((*self._files, *self._dirs))

    def files(self) -> dict[str, str]:
        """Every regular file as text, for state dumps."""
        return {p: e.data.decode("utf-8", errors="replace") for p, e in sorted(self._files.items())}

    # -- changes ---------------------------------------------------------------------------
    def write(self, path: str, data: bytes, mode: int | None = None, append: bool = False) -> None:
        p = normpath(path)
        if p == DEV_NULL:
            return
        if p in self._dirs:
            raise FSError(EISDIR, p)
        self._check_parent(p, must_exist=True)
        old = self._files.get(p)
        if old is not None:
            self._files[p] = FileEntry(
                old.data + data if append else data, old.mode if mode is None else mode, self._clock()
            )
        else:
            self._files[p] = FileEntry(data, 0o644 if mode is None else mode, self._clock())

    def mkdir(self, path: str, parents: bool = False) -> None:
        p = normpath(path)
        if parents:
            cur = ""
            for part in p.strip("/").split("/") if p != "/" else []:
                cur += "/" + part
                if cur in self._files:
                    raise FSError(ENOTDIR if cur != p else EEXIST, cur)
                if cur not in self._dirs:
                    self._dirs[cur] = FileEntry(b"", 0o755, self._clock())
            return
        if p in self._dirs or p in self._files or p == DEV_NULL:
            raise FSError(EEXIST, p)
        self._check_parent(p, must_exist=True)
        self._dirs[p] = FileEntry(b"", 0o755, self._clock())

    def remove(self, path: str, recursive: bool = False) -> None:
        p = normpath(path)
        if p in self._files:
            del self._files[p]
            return
        if p not in self._dirs:
            self._check_parent(p)
            raise FSError(ENOENT, p)
        if p == "/":
            raise FSError(EBUSY, p)
        inside = self._subtree(p)
        if not recursive:
            raise FSError(EISDIR, p)
        for k in inside:
            self._files.pop(k, None)
            self._dirs.pop(k, None)
        del self._dirs[p]

    def rmdir(self, path: str) -> None:
        p = normpath(path)
        if p not in self._dirs:
            raise FSError(ENOTDIR if p in self._files else ENOENT, p)
        if self._subtree(p):
            raise FSError(ENOTEMPTY, p)
        if p == "/":
            raise FSError(EBUSY, p)
        del self._dirs[p]

    def rename(self, src: str, dst: str) -> None:
        s, d = normpath(src), self._target(src, dst)
        if s == d:
            return
        if s in self._files:
            if d in self._dirs:
                raise FSError(EISDIR, d)
            self._check_parent(d, must_exist=True)
            self._files[d] = self._files.pop(s)
            return
        if s not in self._dirs:
            raise FSError(ENOENT, s)
        if d.startswith(s + "/"):
            raise FSError("Invalid argument", d)
        if d in self._files:
            raise FSError(ENOTDIR, d)
        if d in self._dirs and self._subtree(d):
            raise FSError(ENOTEMPTY, d)
        self._check_parent(d, must_exist=True)
        for k in [s, *self._subtree(s)]:
            table = self._files if k in self._files else self._dirs
            table[d + k[len(s) :]] = table.pop(k)

    def copy(self, src: str, dst: str, preserve: bool = False) -> None:
        """Copy a regular file; ``preserve`` keeps the mtime as ``cp -p`` does."""
        s, d = normpath(src), self._target(src, dst)
        if s in self._dirs:
            raise FSError(EISDIR, s)
        entry = self.stat(s)
        if s == d:
            raise FSError("are the same file", d)
        self.write(d, entry.data, mode=entry.mode if preserve or not self.isfile(d) else None)
        if preserve:
            self._files[d].mtime = entry.mtime

    def chmod(self, path: str, mode: int) -> None:
        p = normpath(path)
        entry = self._files.get(p) or self._dirs.get(p)
        if entry is None:
            raise FSError(ENOENT, p)
        entry.mode = mode & 0o7777

    def touch(self, path: str) -> None:
        """Create an empty file or bump the mtime of an existing one."""
        p = normpath(path)
        entry = self._files.get(p) or self._dirs.get(p)
        if entry is None:
            self.write(p, b"")
        else:
            entry.mtime = self._clock()

    # -- helpers ---------------------------------------------------------------------------
    def _target(self, src: str, dst: str) -> str:
        d = normpath(dst)
        return (d.rstrip("/") + "/" + _basename(normpath(src))) if d in self._dirs else d

    def _subtree(self, p: str) -> list[str]:
        prefix = p.rstrip("/") + "/"
        return [k for k in (*self._files, *self._dirs) if k.startswith(prefix) and k != p]

    def _check_parent(self, p: str, must_exist: bool = False) -> None:
        """Raise ENOTDIR when an ancestor is a file; with ``must_exist`` raise ENOENT when the parent is missing."""
        parent = _parent(p)
        while parent != "/" and parent not in self._dirs:
            if parent in self._files:
                raise FSError(ENOTDIR, p)
            parent = _parent(parent)
        if must_exist and _parent(p) not in self._dirs:
            raise FSError(ENOENT, p)

    def __repr__(self) -> str:
        return f"MemFS({len(self._files)} files, {len(self._dirs)} dirs)"
