"""K3s's /etc/rancher/k3s/registries.yaml: read a node's, merge the plan into it, check it.

The guide overwrites the file; the wizard merges: other mirrors and configs stay, only the
plan's hosts get their TLS and auth entries. K3s reads the file only at start, and then
writes containerd's ``certs.d/<host>/hosts.toml`` — so whether a node has LOADED the plan
is read from those files, not from registries.yaml.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import yaml

from .credentials import Secret
from .plan import Plan, is_cluster_dns
from .script import Script

PATH = "/etc/rancher/k3s/registries.yaml"
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
        tls["ca_file"] = "/etc/rancher/k3s/gitea-registry-ca.crt"
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
def facts_script(plan: Plan) -> str:
    """Read-only: what a node has on disk and what its k3s unit says. One key=value per line."""
    s = Script()
    s.add("F={path}", path=PATH)
    s.add("C={dir}", dir=CONTAINERD_DIR)
    s.add('echo "k3s=$(systemctl show k3s -p LoadState --value)"')
    s.add('echo "k3s_agent=$(systemctl show k3s-agent -p LoadState --value)"')
    s.add('echo "k3s_state=$(systemctl show k3s -p ActiveState --value)"')
    s.add('echo "k3s_agent_state=$(systemctl show k3s-agent -p ActiveState --value)"')
    # microseconds where systemd has --timestamp (v247+), seconds otherwise
    s.add('echo "k3s_enter=$(systemctl show k3s -p ActiveEnterTimestamp --value --timestamp=us+utc 2>/dev/null '
          '|| systemctl show k3s -p ActiveEnterTimestamp --value)"')
    s.add('echo "k3s_agent_enter=$(systemctl show k3s-agent -p ActiveEnterTimestamp --value --timestamp=us+utc '
          '2>/dev/null || systemctl show k3s-agent -p ActiveEnterTimestamp --value)"')
    s.add('echo "k3s_mono=$(systemctl show k3s -p ActiveEnterTimestampMonotonic --value)"')
    s.add('echo "k3s_agent_mono=$(systemctl show k3s-agent -p ActiveEnterTimestampMonotonic --value)"')
    s.add('echo "file=$(base64 -w0 "$F" 2>/dev/null)"')
    s.add('echo "mtime=$(stat -c %y "$F" 2>/dev/null)"')
    s.add('echo "now=$(date +%s)"')
    for i, host in enumerate(plan.node_hosts):
        # the host is a quoted word of its own: "$C"/certs.d/'HOST'/hosts.toml
        s.add('echo "hosts_{i}=$(base64 -w0 "$C"/certs.d/{host}/hosts.toml 2>/dev/null)"', i=i, host=host)
    return s.text()


@dataclass(frozen=True)
class NodeFacts:
    node: str
    unit: str | None  # k3s | k3s-agent | None (neither found)
    active: bool
    active_enter: float | None  # unix seconds of the unit's last start
    active_enter_mono: int | None
    text: str | None  # registries.yaml, None when absent
    mtime: float | None
    loaded_hosts: dict[str, str]  # plan host -> its generated hosts.toml ("" when missing)

    @property
    def hosts_loaded(self) -> bool:
        return all(self.loaded_hosts.values())

    def restart_reason(self, plan: Plan) -> str | None:
        """Why this node needs a k3s restart to load registries.yaml, or None."""
        missing = [h for h, t in self.loaded_hosts.items() if not t]
        if missing:
            return f"containerd has no config for {', '.join(missing)} (k3s has not loaded them)"
        if self.mtime is not None and self.active_enter is not None and self.mtime > self.active_enter:
            return "registries.yaml changed after k3s last started"
        return None


def parse_facts(node: str, output: str, plan: Plan) -> NodeFacts:
    kv = {}
    for line in output.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v.strip()
    unit = "k3s" if kv.get("k3s") == "loaded" else "k3s-agent" if kv.get("k3s_agent") == "loaded" else None
    prefix = "k3s" if unit == "k3s" else "k3s_agent"
    text = base64.b64decode(kv["file"]).decode(errors="replace") if kv.get("file") else None
    hosts = {}
    for i, host in enumerate(plan.node_hosts):
        raw = kv.get(f"hosts_{i}", "")
        hosts[host] = base64.b64decode(raw).decode(errors="replace") if raw else ""
    mono = kv.get(f"{prefix}_mono", "")
    return NodeFacts(node=node, unit=unit, active=kv.get(f"{prefix}_state") == "active",
                     active_enter=parse_systemd_time(kv.get(f"{prefix}_enter", "")),
                     active_enter_mono=int(mono) if mono.isdigit() else None, text=text,
                     mtime=parse_stat_time(kv.get("mtime", "")),
                     loaded_hosts=hosts)


def parse_stat_time(text: str) -> float | None:
    """``stat -c %y``: '2026-11-26 13:45:03.123456789 +0000' → unix seconds (sub-second kept)."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)?\s*([+-]\d{4})?", text or "")
    if not m:
        return None
    base = datetime.strptime(m.group(1) + (m.group(3) or "+0000"), "%Y-%m-%d %H:%M:%S%z").timestamp()
    return base + (float("0" + m.group(2)) if m.group(2) else 0.0)


def parse_systemd_time(text: str) -> float | None:
    """'Thu 2026-11-26 13:45:03 UTC' → unix seconds."""
    m = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\s*(UTC|Z)?", text or "")
    if not m:
        return None
    ts = m.group(1)
    whole, _, frac = ts.partition(".")
    return datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() + (
        float("0." + frac) if frac else 0.0)


def write_script(backup: str | None) -> str:
    """Write $REGISTRIES_YAML (from a Secret, never in the pod spec) atomically, after a backup."""
    s = Script(strict=True)
    s.add("F={path}", path=PATH)
    s.add("mkdir -p {dir}", dir="/etc/rancher/k3s")
    if backup:
        s.add('[ -f "$F" ] && cp -p "$F" {backup} || true', backup=backup)
    s.add('printf "%s" "$REGISTRIES_YAML" > "$F.ghcr2gitea-tmp"')
    s.add('chmod 600 "$F.ghcr2gitea-tmp"')
    s.add('mv "$F.ghcr2gitea-tmp" "$F"')
    s.add('sha256sum "$F"')
    return s.text()
