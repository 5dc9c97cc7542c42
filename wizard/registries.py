"""K3s's /etc/rancher/k3s/registries.yaml: read a node's, merge the plan into it, check it.

The guide overwrites the file; the wizard merges: other mirrors and configs stay, only the
plan's hosts get their TLS and auth entries. K3s reads the file only at start, and then
writes containerd's ``certs.d/<host>/hosts.toml`` — so whether a node has LOADED the plan
is read from those files, not from registries.yaml.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import yaml

from . import k3sversions as KV
from . import masking as M
from .credentials import Secret
from .plan import Plan, is_cluster_dns
from .script import Script
from .script import render as sh

PATH = "/etc/rancher/k3s/registries.yaml"
CA_PATH = "/etc/rancher/k3s/gitea-registry-ca.crt"  # registry.node_tls: ca — the bundle the plan's hosts trust
CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
CERTS_DIR = CONTAINERD_DIR + "/certs.d"
HEADER = "# K3s private registry configuration. Entries for the Gitea registry merged by ghcr2gitea;\n" \
         "# everything else is kept as it was. K3s reads this file only when it starts.\n"


class RegistriesInvalid(Exception):
    """A node's registries.yaml that K3s would refuse (the wizard will not merge into it)."""


def parse(text: str | None, where: str = "registries.yaml") -> dict:
    if not text or not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise RegistriesInvalid(f"{where}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RegistriesInvalid(f"{where}: expected a mapping with mirrors/configs, got {type(data).__name__}")
    for key in ("mirrors", "configs"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise RegistriesInvalid(f"{where}: `{key}` must be a mapping of host names")
    return data


def desired_entry(plan: Plan, token: Secret, existing: dict | None) -> dict:
    """The TLS and auth K3s needs for one of the plan's hosts, on top of what the entry had."""
    entry = copy.deepcopy(existing or {})
    tls = dict(entry.get("tls") or {})
    if plan.node_tls == "ca":
        tls["ca_file"] = CA_PATH
        tls.pop("insecure_skip_verify", None)
    else:
        tls["insecure_skip_verify"] = True
    entry["tls"] = tls
    entry["auth"] = {**{k: v for k, v in (entry.get("auth") or {}).items() if k not in ("auth", "identity_token")},
                     "username": plan.username, "password": token.reveal()}
    return entry


def merge(existing: dict, plan: Plan, token: Secret) -> dict:
    """The node's file with the plan's hosts configured; every other entry kept verbatim."""
    out = copy.deepcopy(existing)
    configs = dict(out.get("configs") or {})
    for host in plan.node_hosts:
        configs[host] = desired_entry(plan, token, configs.get(host))
    out["configs"] = configs
    return out


def render(data: dict) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def problems(data: dict) -> list[str]:
    """What containerd cannot use: cluster DNS names anywhere it would dial them."""
    found = []
    for host in (data.get("configs") or {}):
        if is_cluster_dns(host):
            found.append(f"configs.{host}: a cluster DNS name; containerd runs on the host and cannot resolve it")
    for host, mirror in (data.get("mirrors") or {}).items():
        for ep in (mirror or {}).get("endpoint") or []:
            h = re.sub(r"^https?://", "", str(ep)).split("/")[0]
            if is_cluster_dns(h):
                found.append(f"mirrors.{host}.endpoint {ep}: a cluster DNS name; containerd runs on the host and "
                             "cannot resolve it")
    return found


def configured(data: dict, plan: Plan) -> list[str]:
    """The plan's hosts whose entry lacks what pulls need (TLS trust and credentials)."""
    missing = []
    configs = data.get("configs") or {}
    for host in plan.node_hosts:
        e = configs.get(host) or {}
        tls, auth = e.get("tls") or {}, e.get("auth") or {}
        trusted = tls.get("insecure_skip_verify") is True or bool(tls.get("ca_file"))
        if not trusted or not (auth.get("username") and auth.get("password")):
            missing.append(host)
    return missing


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def backup_path(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{PATH}.bak-{stamp}"


# ------------------------------------------------------------------ node facts
# The probe never prints a credential value: it prints the file MASKED on the node (the values of
# credential keys replaced by a fixed marker, line by line, so line N of the masked text is line N
# of the file), and only when every credential in it is a one-line block-style value the mask hides
# completely. Otherwise it prints the numbers of the lines it could not mask, and the wizard refuses
# to merge into that file.
def _mask_pipeline(path_word: str) -> str:
    """Shell text: the masked view of the file named by ``path_word`` (an already-quoted word)."""
    return (sh("sed -E {prog} ", prog=f"s/{M.MASK_RE}/{M.MASK_REPL_SED}/") + path_word
            + sh(" | sed -E {prog}", prog=f"s/{M.COMMENT_RE}/{M.COMMENT_REPL_SED}/"))


SELFTEST_UNSAFE = "auth: {password: x}"
SELFTEST_ODD = "  continued"
SELFTEST_MASK = "  - 'Password':\t'it''s' # c"


def _facts_head(s: Script) -> None:
    s.add("export LC_ALL=C")
    s.add("F={path}", path=PATH)


def facts_script(plan: Plan, check: TokenCheck | None = None) -> str:
    """Read-only: what a node has on disk and what its k3s unit says. One key=value per line.

    ``check``: also whether each plan host's auth password in containerd's config.toml is the token (what
    k3s loaded, not just that a password is there): ``auth_same_I=1`` or ``0``."""
    s = Script()
    _facts_head(s)
    s.add("C={dir}", dir=CONTAINERD_DIR)
    for line in ('echo "k3s=$(systemctl show k3s -p LoadState --value)"',
                 'echo "k3s_agent=$(systemctl show k3s-agent -p LoadState --value)"',
                 'echo "k3s_state=$(systemctl show k3s -p ActiveState --value)"',
                 'echo "k3s_agent_state=$(systemctl show k3s-agent -p ActiveState --value)"',
                 # Timestamps as systemd's monotonic µs (numeric on every version; the realtime ones are
                 # local time before systemd 247) and the node's own clock pair to turn them into epoch
                 # seconds: realtime before and after reading the uptime.
                 'echo "k3s_mono=$(systemctl show k3s -p ActiveEnterTimestampMonotonic --value)"',
                 'echo "k3s_agent_mono=$(systemctl show k3s-agent -p ActiveEnterTimestampMonotonic --value)"',
                 'echo "k3s_start_mono=$(systemctl show k3s -p InactiveExitTimestampMonotonic --value)"',
                 'echo "k3s_agent_start_mono=$(systemctl show k3s-agent -p InactiveExitTimestampMonotonic --value)"',
                 'echo "k3s_exec_mono=$(systemctl show k3s -p ExecMainStartTimestampMonotonic --value)"',
                 'echo "k3s_agent_exec_mono=$(systemctl show k3s-agent -p ExecMainStartTimestampMonotonic --value)"',
                 'echo "clock_real0=$(date +%s.%N)"',
                 'echo "clock_uptime=$(cat /proc/uptime 2>/dev/null)"',
                 'echo "clock_real1=$(date +%s.%N)"'):
        s.add(line)
    # OpenRC (no systemd): the k3s installer's init scripts
    s.add('[ -f /etc/init.d/k3s ] || [ -f /etc/init.d/k3s-agent ] && echo "openrc=1" || echo "openrc=0"')
    s.add('[ -f "$F" ] && echo "present=1" || echo "present=0"')
    unsafe = dict(loose=M.LOOSE_RE, safe=f"^[0-9]+:({M.SAFE_CRED_BODY}|{M.AUTH_OPEN_BODY})",
                  num="s/^([0-9]+):.*$/unsafe_line=\\1/p")
    odd = dict(ok=M.OK_SHAPE_RE, num="s/^([0-9]+):.*$/odd_line=\\1/p")
    s.add('U=$(grep -a -n -E {loose} "$F" 2>/dev/null | grep -a -v -E {safe} | sed -n -E {num})', **unsafe)
    s.add('O=$(grep -a -n -v -E {ok} "$F" 2>/dev/null | sed -n -E {num})', **odd)
    # fail closed: the node's grep and sed must find and mask what GNU/POSIX tools do, else no file is printed
    s.add("ST=$(printf '%s\\n' {probe} | grep -a -n -E {loose} 2>/dev/null | grep -a -v -E {safe} 2>/dev/null "
          "| sed -n -E {num} 2>/dev/null)", probe=SELFTEST_UNSAFE, **unsafe)
    s.add("SO=$(printf '%s\\n' {probe} | grep -a -n -v -E {ok} 2>/dev/null | sed -n -E {num} 2>/dev/null)",
          probe=SELFTEST_ODD, **odd)
    s.add("SM=$(printf '%s\\n' {probe} | " + _mask_pipeline("") + " 2>/dev/null)", probe=SELFTEST_MASK)
    s.add('[ "$ST$SO$SM" = {want} ] && echo "selftest=ok" || echo "selftest=failed"',
          want=f"unsafe_line=1odd_line=1{M.mask_lines(SELFTEST_MASK)}")
    s.add('[ -n "$U" ] && echo "$U" || true')
    s.add('[ -n "$O" ] && echo "$O" || true')
    s.add('[ -f "$F" ] && [ -z "$U$O" ] && [ "$ST$SO$SM" = {want} ] && echo "masked=$(' + _mask_pipeline('"$F"')
          + ' | base64 -w0)" || true', want=f"unsafe_line=1odd_line=1{M.mask_lines(SELFTEST_MASK)}")
    s.add('echo "mtime=$(stat -c %y "$F" 2>/dev/null)"')  # local time WITH its offset
    s.add('echo "mtime_epoch=$(stat -c %Y "$F" 2>/dev/null)"')
    s.add('echo "now=$(date +%s)"')
    for i, host in enumerate(plan.node_hosts):
        s.add('echo "hosts_"{i}"=$(base64 -w0 "$C"/{rest} 2>/dev/null)"', i=i, rest=f"certs.d/{host}/hosts.toml")
    # containerd's config.toml holds the registries' credentials: only its table headers and one-line
    # `key = value` lines leave the node, every credential key's value replaced by the marker ON the node
    s.add('echo "config=$(grep -a -E {keep} "$C"/config.toml 2>/dev/null | sed -E {mask} | base64 -w0)"',
          keep=CONFIG_KEEP_RE, mask=f"s/{CONFIG_MASK_RE}/\\1 \"{M.MARKER}\"/")
    if check is not None:
        # the first `password = "…"` after the host's auth table header (k3s writes it on the next lines),
        # salted and hashed on the node: only the verdict leaves it
        for i, host in enumerate(plan.node_hosts):
            s.add('H=$(grep -a -n -E {hdr} "$C"/config.toml 2>/dev/null | sed -n -E {first})',
                  hdr=_auth_header_re(host), first="1s/^([0-9]+):.*$/\\1/p")
            s.add('[ -n "$H" ] && [ "$(printf "%s\\n" {salt}"$(sed -n "$H"{rest} "$C"/config.toml | grep -a -E {pw} '
                  '| sed -n -E {value})" | sha256sum)" = {want} ] && echo "auth_same_"{i}"=1" '
                  '|| echo "auth_same_"{i}"=0"', rest=",$p", pw=_PASSWORD_RE, value=f"1s/{_PASSWORD_RE}/\\1/p",
                  salt=check.salt, want=check.want, i=i)
    # the CA bundle (node_tls: ca): presence, sha256 and mode only (certificates are public, but not needed here)
    s.add('[ -f {ca} ] && echo "ca_present=1" || echo "ca_present=0"', ca=CA_PATH)
    s.add('[ -f {ca} ] && echo "ca_sha=$(sha256sum < {ca})" || true', ca=CA_PATH)
    s.add('[ -f {ca} ] && echo "ca_mode=$(stat -c %a {ca})" || true', ca=CA_PATH)
    return s.text()


# config.toml lines the probe prints (a table header, or a key with its value on the same line) and the
# credential keys whose values it masks (TOML: username/password/auth/identitytoken; any *token, *secret)
CONFIG_KEEP_RE = "^[ \t]*(\\[.*\\]|[A-Za-z0-9_.-]+[ \t]*=.*)[ \t]*$"
CONFIG_MASK_RE = f"^([ \t]*[\"']?{M.CRED}[\"']?[ \t]*=).*$"
# what k3s generated for one plan host, as the containerd-config proof judges it
OK, MISSING, STALE, BROKEN = "ok", "missing", "stale", "broken"
# config.toml's auth table of one host in the CRI registry section, as k3s's template writes it (any release)
_CRI_PLUGINS = "([\"']io\\.containerd\\.grpc\\.v1\\.cri[\"']|[\"']io\\.containerd\\.cri\\.v1\\.images[\"']|cri)"
_PASSWORD_RE = "^[ \t]*password[ \t]*=[ \t]*\"(.*)\"[ \t]*$"


def _ere_literal(text: str) -> str:
    """``text`` as a POSIX ERE that matches it literally."""
    return "".join("\\" + c if c in ".[\\*^$+?(){}|" else c for c in text)


def _auth_header_re(host: str) -> str:
    return f"^[ \t]*\\[plugins\\.{_CRI_PLUGINS}\\.registry\\.configs\\.[\"']{_ere_literal(host)}[\"']\\.auth\\][ \t]*$"


def go_quoted(text: str) -> str:
    """``text`` inside the double quotes of Go's ``%q``: how k3s's template writes a password into config.toml."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
             '"': '\\"', "\\": "\\\\"}
    out = []
    for c in text:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        else:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}")
    return "".join(out)


@dataclass(frozen=True)
class TokenCheck:
    """What the facts probe compares each plan host's config.toml auth password with: a salted hash of the
    token as k3s writes it (the script never holds the token, and only ``auth_same_I=1|0`` leaves the node)."""

    salt: str
    want: str  # `sha256sum` output for salt + the quoted password + newline

    @classmethod
    def of(cls, token: Secret) -> TokenCheck:
        import secrets
        salt = secrets.token_hex(16)
        return cls(salt, hashlib.sha256((salt + go_quoted(token.reveal()) + "\n").encode()).hexdigest() + "  -")


def _toml(text: str | None) -> dict | None:
    try:
        return tomllib.loads(text) if text else None
    except tomllib.TOMLDecodeError:
        return None


def _get(doc, *keys):
    for k in keys:
        doc = doc.get(k) if isinstance(doc, dict) else None
    return doc


def generated_state(host: str, plan: Plan, version: KV.K3sVersion | None, hosts_toml: str,
                    config: dict | None, same_token: bool | None = None) -> tuple[str, str]:
    """(state, why) of what this node's k3s generated for ``host``: OK, MISSING/STALE (registries.yaml as the
    wizard wrote it is not loaded: a restart is needed), BROKEN (loaded, but containerd ignores it). Read
    where THIS release writes it (wizard/k3sversions.py): config.toml before Feb 2024, else certs.d."""
    sections = [version.cri_section] if version else [KV.CRI_V1, KV.CRI_V2]
    registry = next((r for c in sections if isinstance(r := _get(config, "plugins", c, "registry"), dict)), {})
    entry = _get(registry, "configs", host) or {}
    auth = entry.get("auth") if isinstance(entry, dict) else None
    auth_ok = isinstance(auth, dict) and bool(auth.get("username")) and bool(auth.get("password"))
    skip = plan.node_tls != "ca"
    want = "skip verification" if skip else f"trust {CA_PATH}"
    stale_token = f'config.toml registry.configs."{host}".auth holds another password than the token ' \
        "(k3s loaded an earlier registries.yaml)"
    certs_d = version.certs_d if version else bool(hosts_toml) or "config_path" in registry
    if not certs_d:
        where = f'config.toml registry.configs."{host}"'
        if not entry:
            return MISSING, f"{where} is absent (k3s has not loaded registries.yaml)"
        tls = entry.get("tls") or {}
        if not (tls.get("insecure_skip_verify") is True if skip else tls.get("ca_file") == CA_PATH):
            return STALE, f"{where}.tls does not {want}"
        if not auth_ok:
            return STALE, f"{where}.auth has no username and password"
        if same_token is False:
            return STALE, stale_token
        return OK, f"{where}: tls ({'insecure_skip_verify' if skip else 'ca_file'}) and auth" + _token_note(same_token)
    where = f"certs.d/{host}/hosts.toml"
    if not hosts_toml:
        return MISSING, f"{where} is absent (k3s has not loaded registries.yaml)"
    doc = _toml(hosts_toml)
    if doc is None:
        return BROKEN, f"{where} is not valid TOML: containerd ignores it"
    if not isinstance(doc.get("host"), dict):
        return BROKEN, (f"{where} has no [host] table: containerd ignores it (\"invalid host tree\") and with it "
                        "the host's TLS settings")
    if not (doc.get("skip_verify") is True if skip else CA_PATH in (doc.get("ca") or [])):
        return STALE, f"{where} does not {want}"
    if not auth_ok:
        return STALE, f'config.toml {sections[0] if version else "CRI"} registry.configs."{host}".auth is absent'
    if same_token is False:
        return STALE, stale_token
    return OK, f"{where} ({'skip_verify' if skip else 'ca'}, [host]) and the auth in config.toml" + _token_note(same_token)


def _token_note(same_token: bool | None) -> str:
    return " (the token)" if same_token else ""


@dataclass(frozen=True)
class NodeFacts:
    node: str
    unit: str | None  # k3s | k3s-agent | None (neither found)
    active: bool
    active_enter: float | None  # unix seconds (node clock) the unit last became active (READY)
    active_enter_mono: int | None  # the same moment in systemd's monotonic µs: its change proves a restart
    text: str | None  # registries.yaml MASKED on the node (credential values → MARKER); None when absent/unsafe
    mtime: float | None
    loaded_hosts: dict[str, str]  # plan host -> its generated hosts.toml ("" when missing)
    present: bool = False  # the file exists (text is None when it exists but could not be masked)
    unsafe: tuple[int, ...] = ()  # lines with a credential the line mask cannot hide
    odd: tuple[int, ...] = ()  # lines that continue a value from an earlier line
    tools_ok: bool = True  # the node's grep and sed passed the probe's self-test
    ca_present: bool = False  # CA_PATH exists (node_tls: ca)
    ca_sha: str | None = None  # its sha256 (hex)
    ca_mode: str | None = None  # its mode, octal as stat prints it
    # when systemd started the unit's process (InactiveExit, else ExecMainStart), unix seconds on the node's
    # clock, as bounds: the truth lies in [started_after, started_by] (the clock pair is read in two steps)
    started_after: float | None = None
    started_by: float | None = None
    k3s_version: str = ""  # the Node's kubeletVersion (what k3s generates from registries.yaml depends on it)
    # plan host -> (state, why) of what k3s generated for it (generated_state); empty: judged by loaded_hosts
    generated: dict[str, tuple[str, str]] = field(default_factory=dict)
    openrc: bool = False  # no systemd unit, but the installer's OpenRC init script (/etc/init.d/k3s*)

    @property
    def hosts_loaded(self) -> bool:
        if self.generated:
            return all(state == OK for state, _ in self.generated.values())
        return all(self.loaded_hosts.values())

    @property
    def broken(self) -> dict[str, str]:
        """Plan hosts whose generated config containerd ignores (a restart does not change it): host → why."""
        return {h: why for h, (state, why) in self.generated.items() if state == BROKEN}

    def broken_summary(self) -> str:
        """One line for every broken host at once (they share the cause), naming this node's k3s release."""
        hosts = sorted(self.broken)
        if not hosts:
            return ""
        v = KV.parse(self.k3s_version)
        release = f"k3s {self.k3s_version}" + (f", fixed in {v.fixed_in}" if v and v.fixed_in else "") \
            if self.k3s_version else "this k3s release"
        shapes = {why.replace(h, "HOST") for h, why in self.broken.items()}
        why = shapes.pop() if len(shapes) == 1 else "; ".join(self.broken[h] for h in hosts)
        return f"{why} — for {', '.join(hosts)} ({release})"

    @property
    def not_loaded(self) -> dict[str, str]:
        """Plan hosts whose entry this node's k3s has not (yet) generated as planned: host → why."""
        if self.generated:
            return {h: why for h, (state, why) in self.generated.items() if state in (MISSING, STALE)}
        return {h: "no config" for h, t in self.loaded_hosts.items() if not t}

    @property
    def unmaskable(self) -> str | None:
        """Why the node's file cannot be read safely (one line, without the node's name), or None."""
        if self.present and not self.tools_ok:
            return (f"{PATH}: the node's grep or sed did not pass the probe's self-test, so the file was not read; "
                    "install GNU or POSIX grep and sed on the node")
        if not (self.unsafe or self.odd):
            return None
        where = ", ".join(str(n) for n in sorted(set(self.unsafe) | set(self.odd))[:5])
        return (f"{PATH} line {where}: a credential or value the wizard cannot mask on the node (flow style {{…}}, "
                "a block scalar | or >, an anchor or alias, or a value continued over several lines); rewrite it "
                "in block style")

    def restart_reason(self, plan: Plan) -> str | None:
        """Why this node needs a k3s restart to load registries.yaml, or None."""
        absent = [h for h, (state, _) in self.generated.items() if state == MISSING] if self.generated else \
            list(self.not_loaded)
        stale = [why for state, why in self.generated.values() if state == STALE]
        if absent or stale:
            head = [f"containerd has no config for {', '.join(absent)} (k3s has not loaded them)"] if absent else []
            return "; ".join(head + stale)
        # k3s reads the file once its process starts: a change after that start may not be loaded
        began = self.started_by if self.started_by is not None else self.active_enter
        if self.mtime is not None and began is not None and self.mtime > began:
            return "registries.yaml changed after k3s last started"
        return None


    def still_loaded(self) -> list[str]:
        """Plan hosts containerd still has a config for although registries.yaml no longer names them (after a
        rollback, until k3s restarts and regenerates containerd's config)."""
        try:
            in_file = set(parse(self.text).get("configs") or {}) if self.text is not None else set()
        except RegistriesInvalid:
            in_file = set()
        if self.generated:
            loaded = [h for h, (state, _) in self.generated.items() if state != MISSING]
        else:
            loaded = [h for h, t in self.loaded_hosts.items() if t]
        return sorted(h for h in loaded if h not in in_file)

    def unload_reason(self, plan: Plan) -> str | None:
        """Why this node needs a k3s restart to drop what the migration configured (rollback), or None."""
        still = self.still_loaded()
        if still:
            return f"containerd still has config for {', '.join(still)} (k3s has not reloaded registries.yaml)"
        began = self.started_by if self.started_by is not None else self.active_enter
        if self.mtime is not None and began is not None and self.mtime > began:
            return "registries.yaml changed after k3s last started"
        return None


def parse_facts(node: str, output: str, plan: Plan, k3s_version: str = "") -> NodeFacts:
    """The probe's output; ``k3s_version`` is the Node's kubeletVersion (an unknown one: the layout on disk)."""
    kv, unsafe, odd = {}, [], []
    for line in output.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            k, v = k.strip(), v.strip()
            if k == "unsafe_line" and v.isdigit():
                unsafe.append(int(v))
            elif k == "odd_line" and v.isdigit():
                odd.append(int(v))
            else:
                kv[k] = v
    unit = "k3s" if kv.get("k3s") == "loaded" else "k3s-agent" if kv.get("k3s_agent") == "loaded" else None
    prefix = "k3s" if unit == "k3s" else "k3s_agent"
    present = kv.get("present") == "1"
    text = None
    tools_ok = kv.get("selftest") == "ok"
    if present and tools_ok and not (unsafe or odd):
        text = base64.b64decode(kv.get("masked", "")).decode(errors="replace")
    hosts = {}
    for i, host in enumerate(plan.node_hosts):
        raw = kv.get(f"hosts_{i}", "")
        hosts[host] = base64.b64decode(raw).decode(errors="replace") if raw else ""
    config = _toml(base64.b64decode(kv.get("config", "")).decode(errors="replace")) if kv.get("config") else None
    version = KV.parse(k3s_version)
    same = {h: kv[f"auth_same_{i}"] == "1" for i, h in enumerate(plan.node_hosts) if f"auth_same_{i}" in kv}
    generated = {h: generated_state(h, plan, version, t, config, same.get(h)) for h, t in hosts.items()}
    mono = _int(kv.get(f"{prefix}_mono", ""))
    began = _int(kv.get(f"{prefix}_start_mono", "")) or _int(kv.get(f"{prefix}_exec_mono", "")) or mono
    offset = clock_offset(kv.get("clock_real0", ""), kv.get("clock_uptime", ""), kv.get("clock_real1", ""))
    at = (lambda us, i: us / 1e6 + offset[i] if us and offset else None)  # noqa: E731
    enter = (at(mono, 0) + at(mono, 1)) / 2 if mono and offset else None
    mtime = parse_stat_time(kv.get("mtime", ""))
    if mtime is None and kv.get("mtime_epoch", "").isdigit():
        mtime = float(kv["mtime_epoch"])
    return NodeFacts(node=node, unit=unit, active=kv.get(f"{prefix}_state") == "active",
                     active_enter=enter, active_enter_mono=mono, text=text, mtime=mtime,
                     loaded_hosts=hosts, present=present, unsafe=tuple(unsafe), odd=tuple(odd), tools_ok=tools_ok,
                     started_after=at(began, 0), started_by=at(began, 1),
                     ca_present=kv.get("ca_present") == "1", ca_sha=_sha_field(kv.get("ca_sha", "")),
                     ca_mode=kv.get("ca_mode") or None, k3s_version=k3s_version, generated=generated,
                     openrc=unit is None and kv.get("openrc") == "1")


def _sha_field(text: str) -> str | None:
    """``sha256sum`` output ('HEX  -') → HEX, or None."""
    word = text.split(" ", 1)[0]
    return word if re.fullmatch(r"[0-9a-f]{64}", word) else None


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def clock_offset(real0: str, uptime: str, real1: str) -> tuple[float, float] | None:
    """Bounds of (realtime − monotonic) on the node, in seconds, from ``date +%s.%N`` before and after
    ``cat /proc/uptime``. The uptime is truncated to 1/100 s; a ``date`` without %N (it prints the
    letters) counts as a whole second wide. None when a reading is missing."""
    def real(text: str) -> tuple[float, float] | None:
        m = re.match(r"(\d+)(?:\.(\d+))?", text or "")
        if not m:
            return None
        whole = float(m.group(1))
        return (whole + float("0." + m.group(2)), 0.0) if m.group(2) else (whole, 1.0)
    m = re.match(r"(\d+(?:\.\d+)?)", uptime or "")
    r0, r1 = real(real0), real(real1)
    if not (m and r0 and r1):
        return None
    up = float(m.group(1))
    return r0[0] - up - 0.01, r1[0] + r1[1] - up


def parse_stat_time(text: str) -> float | None:
    """``stat -c %y``: '2026-11-26 22:45:03.123456789 +0900' → unix seconds (sub-second kept). Local time
    without its offset is not guessed at: None."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)?\s*([+-]\d{4})", text or "")
    if not m:
        return None
    base = datetime.strptime(m.group(1) + m.group(3), "%Y-%m-%d %H:%M:%S%z").timestamp()
    return base + (float("0" + m.group(2)) if m.group(2) else 0.0)




# ------------------------------------------------------------------ merge as a splice of the node's lines
# The wizard never sees another registry's credential, so it cannot re-render the node's file. It
# computes the new file as a splice: ranges of the node's own lines, kept verbatim on the node
# (``sed -n 'A,Bp'``), and chunks it renders itself (its hosts' entries, with the token), which
# travel in a Secret. The masked view has one line per line of the real file, so line numbers
# found in it address the real file.
UNMASKABLE_FIX = ("rewrite that part of the file in block style, one `key: value` per line (e.g. "
                  "`password: VALUE`), then run again; nothing was written to any node")
COMPARE_GROUP = M.VALUE_GROUP


class Unmergeable(RegistriesInvalid):
    """A node's file the wizard will not splice into (multi-document, anchors, flow-style configs)."""


def by_node(problems: dict[str, str]) -> str:
    """``{node: reason}`` as one line, nodes with the same reason named together."""
    groups: dict[str, list[str]] = {}
    for node, reason in problems.items():
        groups.setdefault(reason, []).append(node)
    return "; ".join(f"{', '.join(nodes)}: {reason}" for reason, nodes in groups.items())


def _dump(obj) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=float("inf"))


def token_value_text(token: Secret) -> str:
    """The password value exactly as the wizard's dumper writes it in an entry (quotes included)."""
    return _dump({"password": token.reveal()})[len("password: "):].rstrip("\n")


def _line_chunks(text: str) -> list[str]:
    """The text's lines with their terminators (the last may have none)."""
    return text.splitlines(keepends=True) if "\r" not in text else re.findall(r"[^\n]*\n|[^\n]+$", text)


@dataclass(frozen=True)
class Layout:
    """Where things are in a node's masked file (0-based line indexes; ranges end-exclusive)."""

    lines: tuple[str, ...]  # masked lines with their terminators
    data: dict  # the masked file, parsed
    top_col: int  # column of the top-level keys
    configs: tuple[int, int] | None  # the configs key line .. end of its value
    configs_block: bool  # configs has a block mapping value (entries can be spliced in)
    child_col: int  # column of the configs entries
    entries: dict[str, tuple[int, int]]  # host -> range of its entry (key line through last content line)
    password_lines: dict[str, int]  # host -> line of its auth.password (when one-line)


def _trim(lines: tuple[str, ...], start: int, end: int) -> int:
    while end > start + 1 and lines[end - 1].strip() in ("", "#"):
        end -= 1
    return end


def layout(masked: str, where: str) -> Layout:
    """The structure of a node's masked registries.yaml, or Unmergeable with the cause."""
    data = parse(masked, where)  # RegistriesInvalid when not YAML or not a mapping
    lines = tuple(_line_chunks(masked))
    try:
        docs = [d for d in yaml.compose_all(masked, Loader=yaml.SafeLoader) if d is not None]
        anchored = any(isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None)
                       for ev in yaml.parse(masked, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:  # pragma: no cover - parse() above already refused it
        raise RegistriesInvalid(f"{where}: not valid YAML: {e}") from None
    if len(docs) > 1:
        raise Unmergeable(f"{where}: holds {len(docs)} YAML documents; K3s reads one")
    if anchored:
        raise Unmergeable(f"{where}: uses YAML anchors or aliases (& or *), which a line-by-line merge cannot keep "
                          "consistent")
    top = docs[0] if docs else None
    if top is not None and (not isinstance(top, yaml.MappingNode) or top.flow_style):
        raise Unmergeable(f"{where}: the file is one flow-style mapping {{…}}")
    children = top.value if top is not None else []
    top_col = children[0][0].start_mark.column if children else 0
    configs, block, child_col, entries, pw = None, False, top_col + 2, {}, {}
    for i, (k, v) in enumerate(children):
        if k.value != "configs":
            continue
        end = children[i + 1][0].start_mark.line if i + 1 < len(children) else len(lines)
        configs = (k.start_mark.line, _trim(lines, k.start_mark.line, end))
        if isinstance(v, yaml.MappingNode) and v.value:
            if v.flow_style:
                raise Unmergeable(f"{where}: `configs` is written in flow style {{…}}")
            block = True
            child_col = v.value[0][0].start_mark.column
            seen = set()
            for j, (hk, hv) in enumerate(v.value):
                if not isinstance(hk, yaml.ScalarNode):
                    raise Unmergeable(f"{where}: a `configs` key that is not a host name")
                if hk.value in seen:
                    raise Unmergeable(f"{where}: configs.{hk.value} appears twice")
                seen.add(hk.value)
                h_end = v.value[j + 1][0].start_mark.line if j + 1 < len(v.value) else configs[1]
                entries[hk.value] = (hk.start_mark.line, _trim(lines, hk.start_mark.line, h_end))
                for ak, av in (hv.value if isinstance(hv, yaml.MappingNode) else []):
                    if ak.value == "auth" and isinstance(av, yaml.MappingNode):
                        for pk, pv in av.value:
                            if pk.value == "password" and pv.start_mark.line == pv.end_mark.line:
                                pw[hk.value] = pv.start_mark.line
        elif not (isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null")) and not (
                isinstance(v, yaml.MappingNode) and not v.value):
            raise Unmergeable(f"{where}: `configs` is not a mapping of host names")
        elif configs[1] - configs[0] != 1:
            raise Unmergeable(f"{where}: `configs` is empty but spans several lines")
    return Layout(lines, data, top_col, configs, block, child_col, entries, pw)


def own_password_lines(lay: Layout, plan: Plan) -> dict[str, int]:
    """1-based file lines holding the password of one of the plan's hosts (to compare with the token)."""
    return {h: lay.password_lines[h] + 1 for h in plan.node_hosts if h in lay.password_lines}


def _strip_markers(value):
    if isinstance(value, dict):
        return {k: _strip_markers(v) for k, v in value.items() if v != M.MARKER}
    return value


def _indent(text: str, col: int) -> str:
    pad = " " * col
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


@dataclass(frozen=True)
class NodePlan:
    """How one node's file becomes the merged file: the splice, what the wizard expects to read back."""

    node: str
    had_file: bool
    ops: tuple  # ("keep", first, last) 1-based inclusive | ("chunk", index)
    chunks: tuple[str, ...] = field(repr=False)  # the wizard's own text, with the token: a Secret, never a log
    old_masked_sha: str | None  # sha256 of the masked view the probe read (the write checks it is unchanged)
    new_masked: str  # the masked view the file must have afterwards
    new_checks: tuple[tuple[int, str], ...]  # (1-based line, value) credential values to compare on read-back
    before: str  # display texts (credential values masked / fingerprinted)
    after: str
    added: tuple[str, ...] = ()  # the plan hosts whose entries the splice adds (the node's file had none)
    configs_added: bool = False  # the splice added the `configs:` key itself


def plan_node(node: str, lay: Layout | None, plan: Plan, token: Secret, same: dict[int, bool]) -> NodePlan | None:
    """The splice that configures the plan's hosts in one node's file, or None when nothing changes.

    ``lay`` is the layout of the node's masked file (None: no file); ``same`` says, per 1-based line of an
    own password, whether the node's value already equals the token (the node compared it)."""
    tok_text = token_value_text(token)
    if lay is None:
        text = render(merge({}, plan, token))
        return dataclasses.replace(_finish(node, False, [], [text], [("chunk", 0)], None, None, same, tok_text),
                                   added=tuple(plan.node_hosts), configs_added=True)
    configs = dict(lay.data.get("configs") or {})
    reps: list[tuple[int, int, str]] = []  # (start, end, chunk) over 0-based lines
    own_lines = own_password_lines(lay, plan)
    new_entries = {}
    for host in plan.node_hosts:
        existing = configs.get(host)
        existing = existing if isinstance(existing, dict) else None
        want = _strip_markers(desired_entry(plan, token, existing))
        have = copy.deepcopy(existing)
        if have is not None and own_lines.get(host) and same.get(own_lines[host]):
            (have.get("auth") or {})["password"] = token.reveal()
        if want == have:
            continue
        chunk = _indent(_dump({host: want}), lay.child_col)
        if host in lay.entries:
            a, b = lay.entries[host]
            reps.append((a, b, chunk))
        else:
            new_entries[host] = chunk
    if not reps and not new_entries:
        return None
    if new_entries:
        body = "".join(new_entries.values())
        if lay.configs is not None and lay.configs_block:
            at = max(b for a, b in lay.entries.values())
            reps.append((at, at, body))
        elif lay.configs is not None:  # `configs:` / `configs: {}` / `configs: null` on one line
            a, b = lay.configs
            head = " " * lay.top_col + "configs:\n"
            reps.append((a, b, head + _indent(_dump({h: desired_entry(plan, token, None) for h in new_entries}),
                                              lay.top_col + 2)))
        else:
            at = len(lay.lines)
            head = " " * lay.top_col + "configs:\n"
            reps.append((at, at, head + _indent(_dump({h: desired_entry(plan, token, None) for h in new_entries}),
                                                lay.top_col + 2)))
    reps.sort()
    ops, chunks, cur = [], [], 0
    for a, b, chunk in reps:
        if a > cur:
            ops.append(("keep", cur + 1, a))
        if a == len(lay.lines) and a > 0 and cur < a and not lay.lines[-1].endswith("\n"):
            chunk = "\n" + chunk  # the kept last line has no newline: end it before appending
        ops.append(("chunk", len(chunks)))
        chunks.append(chunk)
        cur = max(cur, b)
    if cur < len(lay.lines):
        ops.append(("keep", cur + 1, len(lay.lines)))
    old = "".join(lay.lines)
    np = _finish(node, True, list(lay.lines), chunks, ops, hashlib.sha256(old.encode()).hexdigest(), own_lines,
                 same, tok_text)
    return dataclasses.replace(np, added=tuple(new_entries), configs_added=bool(new_entries) and lay.configs is None)


def _finish(node, had_file, lines, chunks, ops, old_sha, own_lines, same, tok_text) -> NodePlan:
    for chunk in chunks:
        unsafe, odd = M.unsafe_lines(chunk)
        if unsafe or odd:  # e.g. a token with a newline: the node could not mask it afterwards
            raise Unmergeable(f"{node}: the entry the wizard would write cannot be masked on the node (the token or "
                              "username holds a line break or control character)")
    known = {n - 1 for n in (own_lines or {}).values() if same.get(n)}
    masked_new, shown_new, shown_old, checks = [], [], [], []
    for i, line in enumerate(lines):
        shown_old.append(_known(line, tok_text) if i in known else line)
    n_new = 0
    for op in ops:
        if op[0] == "keep":
            seg = lines[op[1] - 1:op[2]]
            masked_new += seg
            shown_new += [_known(x, tok_text) if (op[1] - 1 + k) in known else x for k, x in enumerate(seg)]
            n_new += len(seg)
        else:
            chunk = chunks[op[1]]
            masked_new.append(M.mask_lines(chunk))
            shown_new.append(M.mask_yaml_text(chunk))
            for k, line in enumerate(chunk.split("\n")):
                value = M.credential_value(line)
                if value is not None:
                    checks.append((n_new + k + 1, value))
            n_new += chunk.count("\n")
    return NodePlan(node, had_file, tuple(ops), tuple(chunks), old_sha, "".join(masked_new), tuple(checks),
                    "".join(shown_old) if had_file else "", "".join(shown_new))


def _known(masked_line: str, tok_text: str) -> str:
    """A masked own-password line whose value the node found equal to the token: shown with its fingerprint."""
    return masked_line.replace(" " + M.MARKER, " " + M.fingerprint(tok_text), 1)


def compare_script(checks: list[tuple[int, str]], salt: str) -> str:
    """Read-only: for each (line, value), whether line N's credential value equals ``value``.

    The node prints only ``same_I=1`` or ``same_I=0``; the script carries salted hashes of the wizard's
    own values (the token), never a value, and nothing of the node's file leaves the node."""
    s = Script()
    s.add("export LC_ALL=C")
    s.add("F={path}", path=PATH)
    for i, (line, value) in enumerate(checks):
        want = hashlib.sha256((salt + value + "\n").encode()).hexdigest() + "  -"
        s.add('[ "$(printf "%s\\n" {salt}"$(sed -n -E {line}{prog} "$F")" | sha256sum)" = {want} ] '
              '&& echo "same_"{i}"=1" || echo "same_"{i}"=0"', salt=salt, line=int(line),
              prog=f"s/{M.VALUE_RE}/\\{COMPARE_GROUP}/p", want=want, i=i)
    return s.text()


def parse_compare(output: str, checks: list[tuple[int, str]]) -> dict[int, bool]:
    kv = dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)
    return {line: kv.get(f"same_{i}") == "1" for i, (line, _) in enumerate(checks)}


CHANGED_EXIT = 3
CHANGED_MESSAGE = "registries.yaml changed since the wizard read it; run again"


def write_script(np: NodePlan | None, backup: str | None, *, secret: str, ca: CAPlan | None = None,
                 ca_backup: str | None = None) -> Script:
    """The splice, run on the node: check the file is the one the probe read, build it in a private
    temp file from the node's own lines and the wizard's chunks (from ``secret``), then rename.
    With ``ca`` the CA bundle is written first (backup, private temp file, sha256 checked, 644, rename),
    so registries.yaml never names a file that is not there."""
    s = Script(strict=True)
    s.add("export LC_ALL=C")
    s.add("F={path}", path=PATH)
    s.add("T={tmp}", tmp=PATH + ".ghcr2gitea-tmp")
    s.add("mkdir -p {dir}", dir=PATH.rsplit("/", 1)[0])
    src = None
    if np is not None and np.had_file:
        src = backup or PATH + ".ghcr2gitea-snapshot"
        s.add('cp -p "$F" {src}', src=src)
        s.add("H=$(" + _mask_pipeline(sh("{src}", src=src)) + " | sha256sum)")
        want = np.old_masked_sha + "  -"
        s.add('[ "$H" = {want} ] || rm -f {src}', want=want, src=src)
        s.add('[ "$H" = {want} ] || echo {msg}', want=want, msg=CHANGED_MESSAGE)
        s.add('[ "$H" = {want} ] || exit {code}', want=want, code=CHANGED_EXIT)
    elif np is not None:
        s.add('[ ! -e "$F" ] || echo {msg}', msg=CHANGED_MESSAGE)
        s.add('[ ! -e "$F" ] || exit {code}', code=CHANGED_EXIT)
    if ca is not None:
        _add_ca_write(s, ca, ca_backup, secret=secret)
    if np is not None:
        s.add(': > "$T"')
        for op in np.ops:
            if op[0] == "keep":
                s.add('sed -n {a},{b}p {src} >> "$T"', a=int(op[1]), b=int(op[2]), src=src)
            else:
                var = s.secret_env(f"CHUNK_{int(op[1])}", secret=secret, key=chunk_key(np.node, op[1]))
                s.add('printf "%s" ' + var + ' >> "$T"')
        s.add('chmod 600 "$T"')
        s.add('mv "$T" "$F"')
        if np.had_file and not backup:
            s.add("rm -f {src}", src=src)
        # the written file's sha256 (never its text): the rollback restores the backup only over this very file
        s.add('echo "written_sha256=$(sha256sum < "$F")"')
    s.add("echo written")
    return s


def written_sha(output: str) -> str | None:
    """The sha256 the write script printed for the file it wrote, or None."""
    m = re.search(r"^written_sha256=([0-9a-f]{64})  -$", output or "", re.M)
    return m.group(1) if m else None


def chunk_key(node: str, index: int) -> str:
    return f"{node}.{int(index)}"


# ------------------------------------------------------------------ the CA bundle (registry.node_tls: ca)
# containerd fetches the realm token with the REGISTRY host's TLS settings (design.md, test-environment.md
# "containerd (real)"), so the one ca_file the plan's entries name must trust the registry host AND the realm.
CA_MODE = "644"
CA_EXIT = 4
CA_MESSAGE = "the CA bundle did not arrive intact on the node"
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----")


def pem_blocks(text: str) -> list[str]:
    """The PEM certificate blocks of ``text`` (LF line ends, one trailing newline each); other text is dropped."""
    return [m.group(0).replace("\r\n", "\n") + "\n" for m in _PEM_RE.finditer(text or "")]


def bundle_text(registry_ca: str, realm_ca: str) -> str:
    """What CA_PATH holds: every certificate of registry.ca_file (the registry host's CA, as the operator's
    machine uses it), then the realm's certificate (the auth proxy's, which Traefik presents for the realm host in
    node_tls: ca mode) unless registry.ca_file already holds it. Only certificate blocks, nothing else."""
    certs = pem_blocks(registry_ca)
    for c in pem_blocks(realm_ca):
        if c not in certs:
            certs.append(c)
    return "".join(certs)


def bundle_summary(text: str) -> str:
    """One line per certificate (subject and sha256 fingerprint), for diffs: a bundle is public but long."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    out = []
    for i, block in enumerate(pem_blocks(text), 1):
        try:
            cert = x509.load_pem_x509_certificate(block.encode())
            out.append(f"certificate {i}: {cert.subject.rfc4514_string()} "
                       f"(sha256 {cert.fingerprint(hashes.SHA256()).hex()[:16]})\n")
        except ValueError:
            out.append(f"certificate {i}: unreadable\n")
    return "".join(out) + f"file sha256 {hashlib.sha256(text.encode()).hexdigest()}, mode {CA_MODE}\n"


@dataclass(frozen=True)
class CAPlan:
    """Writing the CA bundle on one node."""

    node: str
    text: str = field(repr=False)
    sha: str  # sha256 hex of text: checked in the temp file before the rename, and read back after
    had_file: bool  # a file was there (it is backed up first)
    before: str  # display: what the probe saw (sha256 and mode only)
    after: str


def plan_ca(node: str, facts: NodeFacts, text: str) -> CAPlan | None:
    """The CA write this node needs, or None when its file already has this content and mode."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    if facts.ca_present and facts.ca_sha == sha and facts.ca_mode == CA_MODE:
        return None
    before = (f"file sha256 {facts.ca_sha or 'unreadable'}, mode {facts.ca_mode or '?'}\n"
              if facts.ca_present else "")
    return CAPlan(node, text, sha, facts.ca_present, before, bundle_summary(text))


def ca_backup_path(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{CA_PATH}.bak-{stamp}"


def ca_key(node: str) -> str:
    return f"{node}.ca"


def _add_ca_write(s: Script, ca: CAPlan, backup: str | None, *, secret: str) -> None:
    s.add("C={path}", path=CA_PATH)
    s.add("CT={tmp}", tmp=CA_PATH + ".ghcr2gitea-tmp")
    if backup:
        s.add('[ ! -f "$C" ] || cp -p "$C" {bak}', bak=backup)
    var = s.secret_env("CA_BUNDLE", secret=secret, key=ca_key(ca.node))
    s.add('printf "%s" ' + var + ' > "$CT"')  # umask 077: private until complete
    s.add('[ "$(sha256sum < "$CT")" = {want} ] || rm -f "$CT"', want=ca.sha + "  -")
    s.add('[ -f "$CT" ] || echo {msg}', msg=CA_MESSAGE)
    s.add('[ -f "$CT" ] || exit {code}', code=CA_EXIT)
    s.add('chmod 644 "$CT"')
    s.add('mv "$CT" "$C"')
