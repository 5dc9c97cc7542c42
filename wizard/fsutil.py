"""Writing files so that a crash leaves the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class UnsafeWrite(OSError):
    """A write the wizard refuses: through a symlink out of the tree it was asked to write, or over a read-only
    or non-regular file. The message names the path and why."""


def check_write(path: str | os.PathLike, *, within: str | os.PathLike | None = None):
    """The real path ``write_atomic`` would replace and its stat (None: new), or UnsafeWrite saying why not."""
    real = Path(os.path.realpath(path))  # a symlinked manifest stays a symlink
    if within is not None:
        root = Path(os.path.realpath(within))
        if real != root and root not in real.parents:
            raise UnsafeWrite(f"{path}: resolves to {real}, outside {within}; not written (a symlink that leaves "
                              "the tree)")
    try:
        st = real.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeWrite(f"{path}: not a regular file; not written")
        if not st.st_mode & 0o222:
            raise UnsafeWrite(f"{path}: read-only (mode {stat.S_IMODE(st.st_mode):o}); not written — make it "
                              "writable first if it should change")
    return real, st


def write_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None, *,
                 within: str | os.PathLike | None = None) -> None:
    """Write through a temp file in the same folder, fsync, then rename over the target (its mode kept).

    A symlinked file stays a symlink (its target is replaced), but only when the target is inside ``within``
    (the tree the operator pointed at); a read-only file (no write bit at all: root ignores modes, we do not)
    or anything but a regular file is never replaced.
    """
    real, st = check_write(path, within=within)
    if mode is None:
        mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".ghcr2gitea-tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
        dfd = os.open(real.parent, os.O_RDONLY)  # the rename itself must survive a power cut
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
