"""The one builder of every shell script the wizard runs on a node or in a pod.

Anything that reaches a node script runs as root on every node, so no value is ever pasted
into a script by string formatting at a call site. A script is written as literal templates
whose ``{name}`` fields are filled with ``shlex.quote``-d values (or plain integers), by
construction; a value can also travel as an environment variable of the pod, literal or
from a Secret key, and the script refers to it as ``"$NAME"``. Temporary files a script
creates are private: every script starts with ``umask 077``.

    s = Script()
    s.add("mkdir -p {dir}", dir="/etc/rancher/k3s")
    s.add('printf "%s" "$REGISTRIES_YAML" > {tmp}', tmp=PATH + ".tmp")
    s.secret_env("REGISTRIES_YAML", secret="ghcr2gitea-node-registries", key="dellmini1")
    pod_command = ["sh", "-c", s.text()]; pod_env = s.env
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass, field

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_FORMATTER = string.Formatter()


class ScriptValueError(ValueError):
    """A value that cannot be put into a script even quoted (NUL, or a non-integer where a number is wanted)."""


def quote(value) -> str:
    """One shell word for ``value``: integers as digits, everything else ``shlex.quote``-d."""
    if isinstance(value, bool):
        raise ScriptValueError(f"a boolean is not a shell word: {value!r}")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise ScriptValueError(f"only str and int values go into scripts, not {type(value).__name__}")
    if "\x00" in value:
        raise ScriptValueError("a NUL byte cannot be passed to a shell")
    return shlex.quote(value)


def render(template: str, **values) -> str:
    """``template`` with each ``{name}`` replaced by ``quote(values[name])``; ``{{``/``}}`` are literal braces.

    Only plain names are allowed in fields (no ``{x.attr}``, ``{x[0]}``, conversions or format specs), so
    a template cannot reach into a value; every field must be given and every value used.
    """
    out, used = [], set()
    for literal, name, spec, conv in _FORMATTER.parse(template):
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ScriptValueError(f"template field {{{name}}}: only plain names are allowed")
        if name not in values:
            raise ScriptValueError(f"template field {{{name}}} has no value")
        used.add(name)
        out.append(quote(values[name]))
    unused = set(values) - used
    if unused:
        raise ScriptValueError(f"values not used by the template: {', '.join(sorted(unused))}")
    return "".join(out)


@dataclass
class Script:
    """A POSIX sh script and the pod environment it reads; ``text()`` is what runs."""

    lines: list[str] = field(default_factory=list)
    env: list[dict] = field(default_factory=list)
    strict: bool = False  # set -e: stop at the first failing command

    def __post_init__(self) -> None:
        head = ["umask 077"]
        if self.strict:
            head.insert(0, "set -e")
        self.lines[:0] = head

    def add(self, template: str, **values) -> Script:
        """Append one line (or several, if the template has newlines) with its values quoted."""
        self.lines.append(render(template, **values))
        return self

    def literal_env(self, name: str, value: str) -> str:
        """Pass ``value`` as the environment variable ``name``; returns ``"$name"`` to use in templates."""
        self._check_name(name)
        if "\x00" in value:
            raise ScriptValueError("a NUL byte cannot be passed in the environment")
        self.env.append({"name": name, "value": value})
        return f'"${name}"'

    def secret_env(self, name: str, *, secret: str, key: str) -> str:
        """Pass a Secret's key as the environment variable ``name`` (the value never enters the pod spec)."""
        self._check_name(name)
        self.env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
        return f'"${name}"'

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def _check_name(self, name: str) -> None:
        if not _ENV_NAME.match(name) or any(e["name"] == name for e in self.env):
            raise ScriptValueError(f"bad or repeated environment variable name {name!r}")
