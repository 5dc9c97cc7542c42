"""The Gitea token: where it comes from, and how it never leaks.

The token is wrapped in ``Secret`` whose repr/str are masked, so an accidental f-string or
log line shows ``Secret(****)``, never the value. Only the code that builds an
Authorization header or a Secret object calls ``reveal()``.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path

from .problem import Failure


class CredentialError(Failure):
    """A one-line reason the token cannot be used, naming the input and the fix."""

    fix = "give the Gitea token with --token-file FILE (mode 600) or GITEA_TOKEN"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_token_file(token_file: str, *, flag: str = "--token-file", what: str = "the Gitea access token") -> Secret:
    """A token file as every command reads one: mode 600, a regular file, one token of UTF-8 text."""
    p = Path(token_file)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CredentialError(f"{flag} {token_file}: file not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(f"{flag} {token_file}: readable by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {token_file}")
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"{flag} {token_file}: not a regular file; point it at the file that "
                              f"holds {what}")
    if st.st_size > 64 * 1024:
        raise CredentialError(f"{flag} {token_file}: {st.st_size} bytes is not a token; point it at the "
                              f"file that holds {what}")
    try:
        value = p.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{flag} {token_file}: not UTF-8 text; write the token as plain text") \
            from None
    except OSError as e:
        raise CredentialError(f"{flag} {token_file}: cannot read ({e.strerror})") from None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or " " in value:
        raise CredentialError(f"{flag} {token_file}: holds more than one token (spaces, tabs or "
                              f"several lines); keep only {what} in it")
    if not value:
        raise CredentialError(f"{flag} {token_file}: the file is empty; put {what} in it")
    return Secret(value)


def load_ghcr_token(token_file: str | None = None) -> Secret | None:
    """The source registry's token: --ghcr-token-file (the same rules as the Gitea token's file), else
    GHCR_TOKEN, else None (anonymous, or the old pull secret's credentials: the Images stage decides)."""
    if token_file:
        return read_token_file(token_file, flag="--ghcr-token-file", what="the GitHub token (read:packages)")
    env = os.environ.get("GHCR_TOKEN", "").strip()
    return Secret(env) if env else None


def load_token(token_file: str | None = None, *, prompt: bool | None = None) -> Secret:
    """--token-file (refused if group/other can read it), else GITEA_TOKEN, else a prompt on a TTY."""
    if token_file:
        return read_token_file(token_file)
    env = os.environ.get("GITEA_TOKEN", "").strip()
    if env:
        return Secret(env)
    if prompt is None:
        prompt = sys.stdin.isatty()
    if prompt:
        value = getpass.getpass("Gitea access token (input hidden): ").strip()
        if value:
            return Secret(value)
    raise CredentialError("no Gitea token: set GITEA_TOKEN, pass --token-file FILE (mode 600), or run on a terminal "
                          "to be asked")


def run_tokens(token_file: str | None, ghcr_token_file: str | None, *, audit: bool,
               prompt: bool | None = None) -> tuple[Secret | None, Secret | None]:
    """A run's two tokens, by one rule for every face: Gitea's (load_token) is required, except by an audit not
    given --token-file (it reads without one and says what it skipped: None); GHCR's is optional. Raises
    CredentialError naming the one that failed."""
    token = None
    try:
        token = load_token(token_file, prompt=prompt)
    except CredentialError:
        if not audit or token_file:
            raise
    return token, load_ghcr_token(ghcr_token_file)


def mask(text: str, *secrets: Secret | str | None) -> str:
    """Replace every occurrence of the secrets (and their base64 forms) in ``text``."""
    import base64
    for s in secrets:
        if not s:
            continue
        value = s.reveal() if isinstance(s, Secret) else s
        if len(value) < 4:
            continue
        text = text.replace(value, "****")
        for prefix in ("", "x:"):
            b = base64.b64encode((prefix + value).encode()).decode().rstrip("=")
            if len(b) > 8:
                text = text.replace(b[:-2], "****")
    return text
