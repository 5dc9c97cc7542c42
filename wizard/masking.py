"""Credential values out of every text the wizard shows, logs or reads from a node — by structure.

Masking never searches for today's token: it finds credential FIELDS (``password``, ``auth``,
``identity_token``, any ``…token``/``…secret`` key, Secret data, ``.dockerconfigjson`` auths,
PEM private keys) and replaces their values, so an old token, another registry's password or a
token YAML had to quote are masked as surely as the current one. (``credentials.mask`` still
runs afterwards as a second belt.)

Two markers:

- ``<masked>``: what a node's registries.yaml shows for a value the wizard never saw. The node
  masks its own file line by line (``sed -E`` with the patterns below, so the Python replica
  ``mask_lines`` and the node agree byte for byte).
- ``<secret, sha256:…>``: a value the wizard holds, with a fingerprint so a diff shows
  changed/unchanged. The fingerprint is an HMAC under a key drawn at random for each process: it
  cannot be brute-forced back to a weak password, and it means nothing outside this run.

The line patterns are POSIX extended regular expressions written so that Python's ``re`` reads
them the same way (no backslash inside brackets, a literal tab, anchored at both ends).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets as _secrets

MARKER = "<masked>"
_KEY = _secrets.token_bytes(32)


def fingerprint(value) -> str:
    """``<secret, sha256:…>`` for a value (keyed per process: comparable within one run only)."""
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
    return f"<secret, sha256:{hmac.new(_KEY, raw, hashlib.sha256).hexdigest()[:12]}>"


def _ci(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_WS = "[ \t\r]"  # a CR too: a file with CRLF line endings is read as K3s reads it
CRED = "(" + "|".join([_ci("password"), _ci("passwd"), _ci("auth"), "[A-Za-z_]*" + _ci("token"),
                       "[A-Za-z_]*" + _ci("secret")]) + ")"
_CRED_KEY = f"({CRED}|\"{CRED}\"|'{CRED}')"
_AUTH_KEY = f"({_ci('auth')}|\"{_ci('auth')}\"|'{_ci('auth')}')"
# ``  - password:`` — the key part of a credential line (group 1 in MASK_RE)
_PREFIX = f"{_WS}*(-{_WS}+)*{_CRED_KEY}{_WS}*:"
# the node's masking: a credential key with a value on its line → the value replaced by the marker
MASK_RE = f"^({_PREFIX}){_WS}+[^ \t].*$"
MASK_REPL_SED = "\\1 " + MARKER
# full-line comments keep only their '#': notes left in a file are not shown
COMMENT_RE = f"^({_WS}*)#.*$"
COMMENT_REPL_SED = "\\1#"
# a credential value the line mask can hide completely: plain on one line, or a closed quoted scalar
_SAFE_VALUE = ("([^][ \t\"'|>&*!{}%@`#,].*|\"([^\"\\\\]|\\\\.)*\"" + _WS + "*(#.*)?|'([^']|'')*'"
               + _WS + "*(#.*)?)")
SAFE_CRED_BODY = f"{_PREFIX}{_WS}+{_SAFE_VALUE}$"
AUTH_OPEN_BODY = f"{_WS}*(-{_WS}+)*{_AUTH_KEY}{_WS}*:{_WS}*(#.*)?$"
# any mention of a credential key (block or flow style); such a line must be SAFE_CRED or AUTH_OPEN
LOOSE_RE = (f"((^|[^A-Za-z0-9_.-]){_CRED_KEY}{_WS}*:({_WS}|$)|[\"']{CRED}[\"']{_WS}*:)")
# the shapes block-style YAML lines have; anything else continues a scalar from an earlier line
OK_SHAPE_RE = (f"(^{_WS}*$|^{_WS}*#|^(---|[.][.][.])({_WS}|$)|^{_WS}*(-{_WS}+)*[^ \t#-][^#]*:({_WS}|$)"
               f"|^{_WS}*-({_WS}|$))")
# the value of a credential line (group VALUE_GROUP), for the on-node comparison
VALUE_RE = f"^({_PREFIX}){_WS}+(.*)$"
VALUE_GROUP = re.compile(VALUE_RE).groups

# display only: keys whose values are credentials in Secret manifests and kubeconfigs
_DISPLAY_KEY = re.compile(r"^([ \t]*(-[ \t]+)*([\"']?)(\.dockerconfigjson|\.dockercfg|tls\.key|ssh-privatekey|"
                          r"client-key-data|[A-Za-z_]*private_?key)\3[ \t]*:)[ \t]+([^ \t|>].*)$", re.IGNORECASE)
_MASK = re.compile(MASK_RE)
_COMMENT = re.compile(COMMENT_RE)
_SAFE = re.compile("^(" + SAFE_CRED_BODY + "|" + AUTH_OPEN_BODY + ")")
_LOOSE = re.compile(LOOSE_RE)
_OK_SHAPE = re.compile(OK_SHAPE_RE)
_VALUE = re.compile(VALUE_RE)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")


def _lines(text: str) -> tuple[list[str], bool]:
    lines = text.split("\n")
    final = lines[-1] == ""
    if final:
        lines.pop()
    return lines, final


def _bytes_view(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("latin-1")  # LC_ALL=C: a byte is a character


def _text_view(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "replace")


def mask_lines(text: str) -> str:
    """Exactly what the node's ``sed -E MASK | sed -E COMMENT`` prints for ``text``."""
    lines, final = _lines(_bytes_view(text))
    out = [_COMMENT.sub(r"\g<1>#", _MASK.sub(r"\g<1> " + MARKER, line)) for line in lines]
    return _text_view("\n".join(out) + ("\n" if final and out else ""))


def unsafe_lines(text: str) -> tuple[list[int], list[int]]:
    """(credential lines the line mask cannot hide, lines that continue a scalar) — 1-based, as the probe."""
    lines, _ = _lines(_bytes_view(text))
    unsafe = [n for n, line in enumerate(lines, 1) if _LOOSE.search(line) and not _SAFE.match(line)]
    odd = [n for n, line in enumerate(lines, 1) if not _OK_SHAPE.search(line)]
    return unsafe, odd


def credential_value(line: str) -> str | None:
    """The value text of a credential line (what the node's comparison hashes), or None."""
    m = _VALUE.match(line)
    return m.group(VALUE_GROUP) if m else None


def mask_yaml_text(text: str | None) -> str:
    """Any YAML/JSON-ish text for display: credential values fingerprinted, lines that mention a
    credential in a form the line mask cannot take apart (flow style, block scalars) hidden whole,
    PEM private key blocks hidden. Values already masked stay as they are."""
    if not text:
        return text or ""
    out, in_pem = [], False
    lines, final = _lines(text)
    for line in lines:
        if in_pem:
            if _PEM_END.search(line):
                in_pem = False
                out.append(line)
            else:
                out.append("<private key line masked>")
            continue
        if _PEM_BEGIN.search(line):
            in_pem = not _PEM_END.search(line)
            out.append(line if in_pem else "<private key masked>")
            continue
        m = _VALUE.match(line)
        if m and _SAFE.match(line):
            value = m.group(VALUE_GROUP)
            if not value.startswith(("<masked", "<secret")) and not value.startswith("#"):
                line = m.group(1) + " " + fingerprint(value)
        elif (d := _DISPLAY_KEY.match(line)) and not d.group(5).startswith(("<masked", "<secret")):
            line = d.group(1) + " " + fingerprint(d.group(5))
        elif _LOOSE.search(line) and not _SAFE.match(line):
            indent = re.match(r"[ \t]*", line).group()
            line = indent + "<line with a credential masked>"
        out.append(line)
    return "\n".join(out) + ("\n" if final else "")


# ---------------------------------------------------------------------- objects
_CRED_FIELD = re.compile(r"^(password|passwd|auth|identity_?token|[a-z_]*token|[a-z_]*secret|"
                         r"client_?secret|private_?key)$", re.IGNORECASE)
_DOCKER_KEYS = (".dockerconfigjson", ".dockercfg")
_CRED_ENV = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.IGNORECASE)


def _docker_config(raw: str) -> dict | None:
    try:
        cfg = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(cfg, dict):
        return None
    auths = cfg.get("auths") if isinstance(cfg.get("auths"), dict) else cfg  # .dockercfg has no "auths"
    shown = {}
    for host, entry in auths.items():
        if not isinstance(entry, dict):
            shown[host] = fingerprint(json.dumps(entry))
            continue
        shown[host] = {k: (v if k in ("username", "email") and isinstance(v, str) else fingerprint(v))
                       for k, v in entry.items()}
    return {"auths": shown}


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]*?-----END \1-----")


def public_certificates(raw: str) -> list[dict] | None:
    """The certificates of a text that holds PEM certificates and nothing else, each as subject, SANs, issuer,
    expiry and fingerprint (tlsinfo.CertInfo) — or None (anything else in it, a key above all, is not public)."""
    blocks = list(_PEM_BLOCK.finditer(raw))
    if not blocks or any(b.group(1) != "CERTIFICATE" for b in blocks) or _PEM_BLOCK.sub("", raw).strip():
        return None
    # imported here: masking is imported by everything, tlsinfo brings the network stack
    from .tlsinfo import cert_info
    try:
        return [cert_info(b.group(0).encode()).to_dict() for b in blocks]
    except ValueError:
        return None


def mask_secret_value(key: str, value, *, encoded: bool):
    """A Secret's data/stringData value for display: a public certificate (``tls.crt``, ``ca.crt``) as what it
    says (subject, SANs, expiry, fingerprint), a docker config as its hosts, anything else fingerprinted."""
    if isinstance(value, str) and key.lower().endswith((".crt", ".pem", ".cert")):
        raw = _decoded(value) if encoded else value
        certs = public_certificates(raw) if raw is not None else None
        if certs is not None:
            return {"certificate": certs[0]} if len(certs) == 1 else {"certificates": certs}
    if key in _DOCKER_KEYS and isinstance(value, str):
        raw = _decoded(value) if encoded else value
        shown = _docker_config(raw) if raw is not None else None
        if shown is not None:
            return shown
    return fingerprint(value)


def _decoded(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def mask_tree(value, key: str = ""):
    """Credential fields of any JSON-like tree masked; strings that are texts masked line by line."""
    if isinstance(value, dict):
        out = {k: mask_tree(v, str(k)) for k, v in value.items()}
        # an env entry {name: GITEA_TOKEN, value: …}: the value is a credential when the name says so
        if isinstance(value.get("name"), str) and isinstance(value.get("value"), str) and value["value"] and \
                _CRED_ENV.search(value["name"]):
            out["value"] = fingerprint(value["value"])
        return out
    if isinstance(value, list):
        return [mask_tree(v, key) for v in value]
    if isinstance(value, str):
        if _CRED_FIELD.match(key) and value and not value.startswith(("<masked", "<secret")):
            return fingerprint(value)
        if key in _DOCKER_KEYS:
            return mask_secret_value(key, value, encoded=False)
        if "\n" in value or _LOOSE.search(value) or _PEM_BEGIN.search(value):
            return mask_yaml_text(value)
    return value


def mask_object(obj: dict | None) -> dict | None:
    """A copy of a Kubernetes object for display: Secret data/stringData values fingerprinted
    (``.dockerconfigjson`` shown as its hosts with their credentials masked), and credential fields
    and embedded texts (a ConfigMap holding a registries.yaml, a PEM key) masked anywhere else."""
    if obj is None:
        return None
    obj = json.loads(json.dumps(obj))
    secret_data = {}
    if obj.get("kind") == "Secret":
        for field, encoded in (("data", True), ("stringData", False)):
            if isinstance(obj.get(field), dict):
                secret_data[field] = {k: mask_secret_value(k, v, encoded=encoded) for k, v in obj[field].items()}
                del obj[field]
    obj = mask_tree(obj)
    obj.update(secret_data)
    return obj
