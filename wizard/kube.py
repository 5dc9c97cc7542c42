"""Talking to the cluster with the real ``kubernetes`` client: connecting, and what a node looks like.

kubeconfig is resolved as kubectl does it: an explicit path, else ``KUBECONFIG``, else
``~/.kube/config``, else, in a pod (``KUBERNETES_SERVICE_HOST`` set), the in-cluster service account:
its token and CA from ``SERVICE_ACCOUNT_DIR`` (the token re-read as the kubelet rotates it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .problem import Failure

if TYPE_CHECKING:  # the client is imported where a connection is made: it costs half a second to import
    from kubernetes import client

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ClusterUnreachable(Failure):
    """The kubeconfig or context cannot be used; the message names it and the fix."""

    fix = "check the network and the kubeconfig (kubectl get nodes), then try again"


class ClusterUnauthorized(ClusterUnreachable):
    """The API answered 401: the kubeconfig's credentials are wrong or expired (never retried)."""


def kubeconfig_path(kubeconfig: str | None = None) -> str | None:
    """The kubeconfig kubectl would read: the explicit path, else ``KUBECONFIG``'s first, else ~/.kube/config if
    it exists; None when there is none (then only a pod's service account is left)."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and Path("~/.kube/config").expanduser().exists():
        path = str(Path("~/.kube/config").expanduser())
    return path


def cluster_configured(kubeconfig: str | None = None) -> bool:
    """Is there a cluster to connect to at all (a kubeconfig, or a pod's service account)? Without importing the
    client: a command that can do without the cluster asks this first."""
    return kubeconfig_path(kubeconfig) is not None or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    from kubernetes import config
    path = kubeconfig_path(kubeconfig)
    if path is None:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return in_cluster_client()
        raise ClusterUnreachable("no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG")
    if not Path(path).exists():
        raise ClusterUnreachable(f"kubeconfig {path}: file not found; pass --kubeconfig FILE or set KUBECONFIG")
    _readable_kubeconfig(path)
    try:
        return config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except config.ConfigException as e:
        names = _context_names(path)
        if context and names is not None and context not in names:
            have = f"its contexts: {', '.join(names)}" if names else "it has no contexts"
            raise ClusterUnreachable(f"context {context!r} is not in kubeconfig {path} ({have}); pass --context "
                                     "with one of them") from None
        where = f"context {context!r}" if context else f"kubeconfig {path}"
        raise ClusterUnreachable(f"{where}: {e}; check `kubectl config get-contexts`") from None
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:  # malformed entries deep inside
        raise ClusterUnreachable(f"kubeconfig {path}: not a usable kubeconfig ({type(e).__name__}: "
                                 f"{str(e)[:120]}); check it with `kubectl config view`") from None


def in_cluster_client(sa_dir: Path | None = None, environ=None) -> client.ApiClient:
    """The pod's own service account: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the
    token and CA the kubelet mounts in ``sa_dir`` (a fresh Configuration: the process-wide default is left alone)."""
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader
    d = Path(sa_dir or SERVICE_ACCOUNT_DIR)
    cfg = client.Configuration()
    try:
        InClusterConfigLoader(str(d / "token"), str(d / "ca.crt"),
                              environ=os.environ if environ is None else environ).load_and_set(cfg)
    except (config.ConfigException, OSError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e).rstrip(".")
        raise ClusterUnreachable(f"in-cluster configuration (KUBERNETES_SERVICE_HOST is set, no kubeconfig): "
                                 f"{why} in {d}; mount the service account token "
                                 "(automountServiceAccountToken: true) or pass --kubeconfig FILE") from None
    return client.ApiClient(cfg)


def _context_names(path: str) -> list[str] | None:
    """The names of the kubeconfig's contexts (to say which there are), or None when it cannot tell."""
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text())
        return [str(c["name"]) for c in data.get("contexts") or [] if isinstance(c, dict) and "name" in c]
    except Exception:  # noqa: BLE001 - only a better message depends on it; the loader said what is wrong
        return None


def _readable_kubeconfig(path: str) -> None:
    """A kubeconfig the client can load: a regular UTF-8 file of sane size holding a YAML mapping."""
    import stat

    import yaml
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ClusterUnreachable(f"kubeconfig {path}: not a regular file; pass --kubeconfig FILE")
        if st.st_size > 16 * 1024 * 1024:
            raise ClusterUnreachable(f"kubeconfig {path}: {st.st_size} bytes is too big for a kubeconfig")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ClusterUnreachable(f"kubeconfig {path}: not UTF-8 text; is this the right file?") from None
    except OSError as e:
        raise ClusterUnreachable(f"kubeconfig {path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ClusterUnreachable(f"kubeconfig {path}: not valid YAML{at}; check it with `kubectl config view`") \
            from None
    if not isinstance(data, dict):
        raise ClusterUnreachable(f"kubeconfig {path}: expected a kubeconfig (a mapping with clusters, users and "
                                 "contexts); check it with `kubectl config view`")


@dataclass(frozen=True)
class NodeInfo:
    """What the live view shows of a node."""

    name: str
    role: str  # server | agent
    ready: str  # True | False | Unknown
    kubelet: str
    internal_ip: str

    @classmethod
    def from_node(cls, node: dict) -> NodeInfo:
        md, st = node["metadata"], node.get("status") or {}
        labels = md.get("labels") or {}
        role = "server" if "node-role.kubernetes.io/control-plane" in labels else "agent"
        ready = next((c["status"] for c in st.get("conditions") or [] if c["type"] == "Ready"), "Unknown")
        ip = next((a["address"] for a in st.get("addresses") or [] if a["type"] == "InternalIP"), "")
        return cls(md["name"], role, ready, (st.get("nodeInfo") or {}).get("kubeletVersion", ""), ip)
