"""Simulated K3s nodes: a filesystem, systemd's view of the k3s unit, restarts, heartbeats.

K3s reads /etc/rancher/k3s/registries.yaml only when it starts, and regenerates
containerd's config from it then; a restart stops the kubelet's heartbeats and, on a server,
the API endpoint. The Ready condition follows the real node lifecycle controller: a short
restart may never show NotReady; only after the grace period does the node turn Unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from . import containerd
from .memfs import MemFS

UNIT_PROPS = ("ActiveState", "SubState", "InactiveExitTimestamp", "InactiveExitTimestampMonotonic",
              "ExecMainStartTimestamp", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestamp",
              "ActiveEnterTimestampMonotonic", "MainPID", "LoadState", "NRestarts")
TIMESTAMP_OPTION_SINCE = 247  # systemd v247 added `systemctl --timestamp=`; older ones refuse the option


def systemd_time(t: float, micro: bool = False, tz: str = "UTC") -> str:
    """systemd's timestamp format: local time in the node's zone (as systemctl prints it without
    ``--timestamp``); ``--timestamp=us+utc`` gives UTC with microseconds (pass ``tz="UTC"``)."""
    when = datetime.fromtimestamp(t, UTC if tz == "UTC" else ZoneInfo(tz))
    return when.strftime("%a %Y-%m-%d %H:%M:%S" + (".%f" if micro else "") + " ") + (when.tzname() or "UTC")


@dataclass(eq=False)
class SimNode:
    name: str
    role: str  # server | agent
    internal_ip: str
    fs: MemFS
    boot_time: float  # wall clock of the simulated boot (monotonic zero)
    unit: str = "k3s"
    state: str = "active"  # active | activating | failed
    active_enter: float = 0.0
    main_pid: int = 1000
    n_restarts: int = 0
    kubelet_up: bool = True
    never_returns: bool = False
    restarts: list[dict] = field(default_factory=list)
    loaded_registries: str | None = None
    last_lease: float = 0.0
    restart_task: asyncio.Task | None = None
    kubelet_started: float = 0.0
    inactive_exit: float = 0.0  # wall clock when systemd last started the unit's process (0: at boot)
    timezone: str = "UTC"  # the node's local time zone (systemctl, date and stat print local time in it)
    systemd_version: int = 252
    k3s_version: str = containerd.KV.CURRENT  # what k3s generates from registries.yaml depends on it
    unit_type: str = "notify"  # notify: active at READY=1; exec (older agent installs): active once exec'd
    init: str = "systemd"  # systemd | openrc (Alpine-style: no systemctl; k3s runs from /etc/init.d)

    @property
    def is_server(self) -> bool:
        return self.role == "server"

    def monotonic_us(self, t: float) -> int:
        return int((t - self.boot_time) * 1_000_000)

    def unit_props(self, unit: str, utc_micro: bool = False) -> dict[str, str]:
        """``systemctl show`` values: realtime stamps in local time (UTC with µs under ``--timestamp=us+utc``),
        the ``…Monotonic`` ones in µs since boot, as systemd keeps both clocks for every transition."""
        if unit.removesuffix(".service") != self.unit:
            return {"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead",
                    "ActiveEnterTimestamp": "", "ActiveEnterTimestampMonotonic": "0", "MainPID": "0",
                    "ExecMainStartTimestamp": "", "ExecMainStartTimestampMonotonic": "0",
                    "InactiveExitTimestamp": "", "InactiveExitTimestampMonotonic": "0", "NRestarts": "0"}
        active = self.state == "active"
        tz = "UTC" if utc_micro else self.timezone
        began = self.inactive_exit or self.active_enter  # the unit started at boot: one moment for both
        return {"LoadState": "loaded", "ActiveState": self.state,
                "SubState": {"active": "running", "activating": "start", "failed": "failed"}[self.state],
                "ActiveEnterTimestamp": systemd_time(self.active_enter, utc_micro, tz)
                if active or self.active_enter else "",
                "ActiveEnterTimestampMonotonic": str(self.monotonic_us(self.active_enter)),
                "InactiveExitTimestamp": systemd_time(began, utc_micro, tz),
                "InactiveExitTimestampMonotonic": str(self.monotonic_us(began)),
                "ExecMainStartTimestamp": systemd_time(began, utc_micro, tz),
                "ExecMainStartTimestampMonotonic": str(self.monotonic_us(began)),
                "MainPID": str(self.main_pid if self.state != "failed" else 0), "NRestarts": str(self.n_restarts)}


class NodeHooks:
    """What a node needs from the rest of the sandbox when k3s stops and starts."""

    async def k3s_stopped(self, node: SimNode) -> None: ...

    async def kubelet_started(self, node: SimNode) -> None:
        """The new k3s process started its kubelet (before READY: it posts ``Starting``, renews its Lease)."""

    async def k3s_started(self, node: SimNode) -> None:
        """k3s sent READY=1 (the unit is active; a server's API answers)."""


def registries_invalid(node: SimNode) -> str | None:
    """What k3s logs about the node's registries.yaml when it cannot load it (None: it can)."""
    if not node.fs.isfile(containerd.REGISTRIES_PATH):
        return None
    try:
        containerd.parse_registries(node.fs.read(containerd.REGISTRIES_PATH).decode(errors="replace"))
    except containerd.RegistriesError as e:
        return str(e)
    return None


def load_registries(node: SimNode) -> None:
    """What k3s does at start: read registries.yaml and write containerd's config from it."""
    text = node.fs.read(containerd.REGISTRIES_PATH).decode() if node.fs.isfile(containerd.REGISTRIES_PATH) else None
    try:
        files = containerd.render(text, node.k3s_version)
    except containerd.RegistriesError:
        files = containerd.render(None, node.k3s_version)
    certs = containerd.CONTAINERD_DIR + "/certs.d"
    if node.fs.isdir(certs):
        node.fs.remove(certs, recursive=True)
    for path, content in files.items():
        node.fs.mkdir(path.rsplit("/", 1)[0], parents=True)
        node.fs.write(path, content.encode(), mode=0o600 if path.endswith("config.toml") else 0o644)
    node.loaded_registries = text


class Systemd:
    """``systemctl`` on a simulated node. A restart takes ``duration(node)`` seconds from the new process
    starting (InactiveExit/ExecMainStart) to READY (ActiveEnter); the kubelet starts ``kubelet_lead(node,
    duration)`` seconds before READY, as on real k3s (agents start the kubelet just before READY, servers
    start it in parallel with etcd and the API server, tens of seconds before READY)."""

    def __init__(self, hooks: NodeHooks, duration: Callable[[SimNode], float], clock: Callable[[], float] = time.time,
                 kubelet_lead: Callable[[SimNode, float], float] = lambda node, total: 0.0):
        self.hooks = hooks
        self.duration = duration
        self.clock = clock
        self.kubelet_lead = kubelet_lead

    def restart(self, node: SimNode) -> asyncio.Task:
        if node.restart_task and not node.restart_task.done():
            return node.restart_task
        node.restart_task = asyncio.get_running_loop().create_task(self._restart(node))
        return node.restart_task

    async def _restart(self, node: SimNode) -> None:
        start = self.clock()
        # start: systemctl asked; exit: the old process gone (stopping the API listener takes its own time);
        # kubelet and end: the new process's kubelet up, then the unit READY
        record = {"start": start, "exit": None, "kubelet": None, "end": None}
        node.restarts.append(record)
        node.state = "activating"
        node.kubelet_up = False
        await self.hooks.k3s_stopped(node)
        node.inactive_exit = record["exit"] = self.clock()  # the old process is gone; systemd starts the new one
        node.main_pid += 137
        if node.unit_type == "exec":  # Type=exec: active as soon as the binary runs, long before the kubelet
            node.n_restarts += 1
            node.active_enter = node.inactive_exit
            node.state = "active"
        if node.never_returns:
            await asyncio.Event().wait()  # k3s hangs in "activating" forever
        total = self.duration(node)
        lead = min(max(self.kubelet_lead(node, total), 0.0), total)
        await asyncio.sleep(total - lead)
        if registries_invalid(node) is not None:
            # k3s retries forever at start ("Waiting to retrieve agent configuration"): the kubelet never starts
            await asyncio.Event().wait()
        load_registries(node)
        node.kubelet_up = True
        node.kubelet_started = self.clock()
        record["kubelet"] = node.kubelet_started
        await self.hooks.kubelet_started(node)
        await asyncio.sleep(lead)
        if node.unit_type != "exec":
            node.n_restarts += 1
            node.active_enter = self.clock()
            node.state = "active"
        record["end"] = self.clock()
        await self.hooks.k3s_started(node)

    async def command(self, node: SimNode, argv: list[str]) -> tuple[int, bytes, bytes]:
        # options may come anywhere; -p/--property/-P take a value (-P is -p with --value)
        args, flags, props = [], set(), []
        i, words = 0, argv[1:]
        while i < len(words):
            a = words[i]
            if a in ("-p", "--property", "-P"):
                props += words[i + 1].split(",") if i + 1 < len(words) else []
                flags |= {"--value"} if a == "-P" else set()
                i += 2
                continue
            if a.startswith("--property="):
                props += a.split("=", 1)[1].split(",")
            elif a.startswith(("-p", "-P")) and not a.startswith("--"):
                props += a[2:].split(",")
                flags |= {"--value"} if a.startswith("-P") else set()
            elif a.startswith("-") and len(a) > 1:
                flags.add(a)
            else:
                args.append(a)
            i += 1
        if not args:
            return 1, b"", b"systemctl: missing command\n"
        verb, rest = args[0], args[1:]
        if verb in ("restart", "start", "stop", "try-restart", "reload-or-restart"):
            if not rest:
                return 1, b"", b"Too few arguments.\n"
            unit = rest[0].removesuffix(".service")
            if unit != node.unit:
                return 5, b"", f"Failed to {verb} {unit}.service: Unit {unit}.service not found.\n".encode()
            if verb == "stop":
                return 1, b"", b"sandbox: stopping k3s is not simulated\n"
            task = self.restart(node)
            if "--no-block" not in flags:
                await asyncio.shield(task)
            return 0, b"", b""
        if verb == "is-active":
            unit = (rest or [""])[0].removesuffix(".service")
            st = node.state if unit == node.unit else "inactive"
            quiet = bool(flags & {"-q", "--quiet"})
            return (0 if st == "active" else 3), b"" if quiet else f"{st}\n".encode(), b""
        stamp = next((f for f in flags if f.startswith("--timestamp")), None)
        if stamp and node.systemd_version < TIMESTAMP_OPTION_SINCE:
            return 1, b"", f"systemctl: unrecognized option '{stamp}'\n".encode()
        if verb == "show":
            units = rest
            if stamp not in (None, "--timestamp=us+utc", "--timestamp=utc", "--timestamp=pretty", "--timestamp=us"):
                return 1, b"", f"Invalid value for --timestamp: {stamp.partition('=')[2]}\n".encode()
            values = node.unit_props(units[0] if units else node.unit, stamp == "--timestamp=us+utc")
            want = props or list(UNIT_PROPS)
            lines = [values.get(p, "") if "--value" in flags else f"{p}={values.get(p, '')}" for p in want]
            return 0, ("\n".join(lines) + "\n").encode(), b""
        if verb == "status":
            unit = (rest or [node.unit])[0].removesuffix(".service")
            v = node.unit_props(unit)
            if v["LoadState"] == "not-found":
                return 4, b"", f"Unit {unit}.service could not be found.\n".encode()
            text = (f"* {unit}.service - Lightweight Kubernetes\n     Loaded: loaded (/etc/systemd/system/{unit}.service;"
                    f" enabled)\n     Active: {v['ActiveState']} ({v['SubState']}) since {v['ActiveEnterTimestamp']}\n"
                    f"   Main PID: {v['MainPID']} (k3s-{'server' if node.is_server else 'agent'})\n")
            return (0 if node.state == "active" else 3), text.encode(), b""
        if verb == "daemon-reload":
            return 0, b"", b""
        return 1, b"", f"Unknown command verb {verb}.\n".encode()


Puller = Callable[[SimNode, str], Awaitable[containerd.PullResult]]


async def crictl(node: SimNode, argv: list[str], puller: Puller) -> tuple[int, bytes, bytes]:
    """``crictl pull IMAGE`` (also as ``k3s crictl``) through the node's loaded containerd config."""
    args = argv[1:]
    if argv[0] == "k3s":
        if not args or args[0] != "crictl":
            return 1, b"", f"k3s: unsupported subcommand {' '.join(args[:1])!r} in the sandbox\n".encode()
        args = args[1:]
    args = [a for a in args if not a.startswith("-")]
    if not args or args[0] != "pull" or len(args) < 2:
        return 1, b"", b"crictl: only `crictl pull IMAGE` is simulated\n"
    if node.state != "active":
        msg = ('time="{}" level=fatal msg="validate service connection: validate CRI v1 image API for endpoint '
               '\\"unix:///run/k3s/containerd/containerd.sock\\": rpc error: code = Unavailable desc = connection '
               'error: desc = \\"transport: Error while dialing: dial unix /run/k3s/containerd/containerd.sock: '
               'connect: connection refused\\""\n').format(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return 1, b"", msg.encode()
    result = await puller(node, args[1])
    rc, out, err = containerd.crictl_output(result)
    return rc, out.encode(), err.encode()
