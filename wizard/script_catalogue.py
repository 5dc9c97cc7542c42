"""Every shell script the wizard can produce, by name: the registry the script tests walk.

A new producer of a node, pod or CI script is added here too, so that the tests check it with
``bash -n``, with hostile values, and inside the sandbox shell's strict subset. ``cluster``
holds the values a script takes from the cluster rather than the plan (untrusted: a tenant
or a compromised controller may choose them): the auth proxy's ClusterIP and the workloads
the CI deploy job restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Plan


@dataclass(frozen=True)
class ClusterValues:
    proxy_ip: str = "10.43.12.34"
    rollouts: tuple[tuple[str, str], ...] = (("Deployment", "gwa-webhook"), ("StatefulSet", "gwa-runner"))
    units: tuple[str, ...] = ("k3s", "k3s-agent")
    extra: dict = field(default_factory=dict)


def node_scripts(plan: Plan, cluster: ClusterValues = ClusterValues()) -> dict[str, str]:
    """Scripts that run on a node (nsenter) or in a pod, keyed by what they are."""
    from . import authflow, registries, restart
    from .stages.auth_proxy import proxy_probe_script
    out = {
        "node: registries facts": registries.facts_script(plan),
        "node: registries facts, with the token compare": registries.facts_script(
            plan, registries.TokenCheck("salt", "0" * 64 + "  -")),
        **_registries_scripts(plan),
        "node: containerd pull": authflow.pull_script(plan.images[0].target + ":latest"),
        "pod: auth proxy probe": proxy_probe_script(cluster.proxy_ip),
        "pod: Kaniko view": authflow.kaniko_script(plan),
        "pod: CA bundle": authflow.ca_bundle_script(),
    }
    for unit in cluster.units:
        out[f"node: restart {unit}"] = restart.restart_script(unit)
    return out


# A node file with another registry's entry (its password masked, as the facts probe reports it), the
# plan's hosts to be added: the splice keeps its lines and appends the wizard's entries.
_NODE_FILE = ("mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.example.com\n"
              "configs:\n  other.example.com:\n    auth:\n      username: ci\n      password: <masked>\n")


def _registries_scripts(plan: Plan) -> dict[str, str]:
    """The compare and write scripts for a node that has a file and for one that has none."""
    from . import registries as R
    from .credentials import Secret
    token = Secret("0123456789abcdef0123456789abcdef01234567")
    out = {}
    for label, text in (("existing file", _NODE_FILE), ("no file", None)):
        lay = R.layout(text, R.PATH) if text is not None else None
        np = R.plan_node("node1", lay, plan, token, {})
        if np is None:
            continue
        backup = R.backup_path() if np.had_file else None
        out[f"node: registries.yaml write ({label})"] = R.write_script(np, backup, secret="s").text()
        if np.new_checks:
            out[f"node: registries.yaml compare ({label})"] = R.compare_script(list(np.new_checks), "salt")
        # registry.node_tls: ca — the CA bundle written first, in the same pod (certificates travel in the Secret)
        ca = R.CAPlan("node1", "", "0" * 64, np.had_file, "", "")
        out[f"node: registries.yaml and CA bundle write ({label})"] = R.write_script(
            np, backup, secret="s", ca=ca, ca_backup=R.ca_backup_path() if np.had_file else None).text()
    # the rollback's (wizard/rollback.py): read the sha256s, put the backup back, remove the file, unmerge
    from . import rollback as RB
    backup = R.backup_path()
    out["node: rollback state"] = RB.node_state_script(backup, R.ca_backup_path()).text()
    out["node: rollback restore backup"] = RB.restore_script(R.PATH, "0" * 64, backup).text()
    out["node: rollback remove file"] = RB.restore_script(R.PATH, "0" * 64, None).text()
    lay = R.layout(_NODE_FILE, R.PATH)
    out["node: rollback unmerge"] = R.write_script(RB.unmerge("node1", lay, ["other.example.com"], False), None,
                                                   secret="s").text()
    out["node: CA bundle write alone"] = R.write_script(None, None, secret="s", ca=R.CAPlan(
        "node1", "", "0" * 64, True, "", ""), ca_backup=R.ca_backup_path()).text()
    return out


def workflow_scripts(plan: Plan, cluster: ClusterValues = ClusterValues()) -> dict[str, str]:
    """The ``run`` scripts of the generated CI workflow (they run on the self-hosted runner), GitHub
    expressions left as written."""
    from . import workflow as W
    rollouts = {img.target: [W.Rollout(kind, name) for kind, name in cluster.rollouts] for img in plan.images}
    wf = W.load(W.render(plan, rollouts, "plan.yaml"))
    out = {}
    for jid, job in wf["jobs"].items():
        for step in job["steps"]:
            if "run" in step:
                out[f"workflow: {jid} / {step['name']}"] = step["run"]
    return out


def every_script(plan: Plan, cluster: ClusterValues = ClusterValues()) -> dict[str, str]:
    return {**node_scripts(plan, cluster), **workflow_scripts(plan, cluster)}
