"""Stage Verify [Step 9]: the Docker v2 token flow end to end, from this machine, a Kaniko-like pod and containerd on every node."""

from __future__ import annotations

import time

from .. import authflow
from ..diagnose import BY_KEY, classify
from .base import (
    Check,
    Context,
    Stage,
    failed,
    passed,
    skipped,
)
from .nodes import node_exec
from .pods import probe_pod
from .preflight import discover_nodes


class Verify(Stage):
    key, title, guide_step = "verify", "Verify", "Step 9"
    description = ("The Docker v2 token flow, end to end, from three vantage points at once: this machine (challenge "
                   "→ realm → token → pull, and the push secret's token may start an upload), a pod as Kaniko sees "
                   "it (/v2/ through the internal service, the realm through the auth proxy trusted via "
                   "SSL_CERT_FILE), and containerd on EVERY node (k3s crictl pull with the node's loaded config), "
                   "plus the guide's pull-test pod on every node (the guide tests one).")

    def verify(self, ctx: Context) -> list[Check]:
        from concurrent.futures import ThreadPoolExecutor
        pods = not (ctx.audit and not ctx.node_probes)  # an audit creates no pod unless --node-probes
        t0 = time.perf_counter()
        timing: dict[str, float] = {}

        def timed(name, fn, *args):
            def run():
                s = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    timing[name] = (time.perf_counter() - s) * 1000
            return run

        # every vantage point at once: the stage takes as long as its slowest check
        with ThreadPoolExecutor(max_workers=4) as pool:
            ops = pool.submit(timed("this machine", authflow.operator_flows, ctx, "challenge", "pull-secret",
                                    "push-secret"))
            kaniko = pool.submit(timed("Kaniko's view", self._kaniko, ctx)) if pods else None
            nodes = pool.submit(timed("containerd's view", self._containerd_on_every_node, ctx)) if pods else None
            pulls = pool.submit(timed("pull-test pods", self._pull_on_every_node, ctx)) if pods else None
            checks = self._operator_checks(ctx, ops.result())
            if pods:
                checks.append(kaniko.result())
                checks += nodes.result()
                checks += pulls.result()
        if not pods:
            checks.append(skipped("Kaniko's view: realm through the proxy", "needs a probe pod",
                                  "run audit with --node-probes"))
            checks.append(skipped("containerd's view on every node", "needs a privileged pod per node",
                                  "run audit with --node-probes"))
            checks += self._pull_events(ctx)
        ctx.cache.verify_timing = {"wall_ms": (time.perf_counter() - t0) * 1000, "parts_ms": dict(timing)}
        return checks

    def _operator_checks(self, ctx: Context, flows: dict) -> list[Check]:
        """This machine's view: the challenge, and the two secrets' tokens walked as their clients use them."""
        p = ctx.plan
        image = p.images[0].target + ":latest"
        repo = p.images[0].target_repo
        checks = []
        flow = flows["challenge"]
        if flow.problem:
            cause, fix = flow.explain()
            checks.append(failed("registry challenge names the plan's realm", cause, fix, flow.evidence()))
        else:
            checks.append(passed("registry challenge names the plan's realm", flow.evidence()))
        flow = flows["pull-secret"]
        if flow is None:
            checks.append(skipped(f"pull secret may pull {image}", f"{p.secrets_namespace}/{p.pull_secret} has no "
                                  f"credentials for {p.registry_host}", "apply stage Registry secrets"))
        elif flow.problem:
            cause, fix = flow.explain()
            checks.append(failed(f"pull secret may pull {image}", cause, fix, flow.evidence()))
        else:
            checks.append(passed(f"pull secret may pull {image}", flow.evidence()))
        flow = flows["push-secret"]
        if flow is None:
            checks.append(skipped(f"push secret may push to {repo}", f"{p.secrets_namespace}/{p.push_secret} has no "
                                  f"credentials for {p.internal_service}", "apply stage Registry secrets"))
        elif flow.problem:
            cause, fix = flow.explain()
            checks.append(failed(f"push secret may push to {repo}", cause, fix, flow.evidence()))
        else:
            checks.append(passed(f"push secret may push to {repo}", flow.evidence(),
                                 "an upload was started and cancelled with the token Kaniko would use"))
        return checks

    def _kaniko(self, ctx: Context) -> Check:
        """A pod set up like the guide's Kaniko pod: hostAliases to the proxy, the proxy CA via SSL_CERT_FILE."""
        p = ctx.plan
        t0 = time.perf_counter()
        svc = ctx.cluster.get("Service", p.proxy_name, p.proxy_namespace)
        if svc is None:
            return failed("Kaniko's view: realm through the proxy", "the auth proxy service is missing",
                          "apply stage TLS auth proxy")
        dep = ctx.cluster.get("Deployment", p.proxy_name, p.proxy_namespace) or {}
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
        proxy_image = containers[0].get("image", "")
        ip = svc["spec"]["clusterIP"]
        spec = {
            "hostAliases": [{"ip": ip, "hostnames": [p.realm_hostname]}],
            "initContainers": [{"name": "setup-certs", "image": p.helper_image, "command": [
                "sh", "-c", authflow.ca_bundle_script()],
                "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"},
                                 {"name": "custom-ca", "mountPath": "/custom-ca"}]}],
            "containers": [{"name": "probe", "image": "curlimages/curl:8.10.1",
                            "env": [{"name": "SSL_CERT_FILE", "value": "/certs/ca-certificates.crt"}],
                            "command": ["sh", "-c", authflow.kaniko_script(p)],
                            "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"}]}],
            "volumes": [{"name": "custom-ca", "configMap": {"name": p.proxy_ca_configmap}},
                        {"name": "merged-certs", "emptyDir": {}}]}
        phase, log = probe_pod(ctx, "kaniko-view", "", namespace=p.proxy_namespace, extra_spec=spec)
        v = authflow.judge_kaniko(log, p, proxy_image=proxy_image)
        ev = {"proxy": f"{p.proxy_namespace}/{p.proxy_name} ({ip})", "phase": phase, "log": log[-600:],
              "ms": round((time.perf_counter() - t0) * 1000, 1),
              "note": "no credentials are sent from the pod: this proves the route, the name mapping and the trust; "
                      "the push secret's token is proven by 'push secret may push'"}
        if v.realm:
            ev["realm"] = v.realm
        if v.ok:
            return passed("Kaniko's view: realm through the proxy", ev)
        d = BY_KEY.get(v.problem)
        ev["diagnosis"] = v.problem
        return failed("Kaniko's view: realm through the proxy", v.cause + (f": {d.cause}" if d else ""),
                      d.fix if d else "check the proxy certificate and CA ConfigMap (stage TLS auth proxy)", ev)

    def _containerd_on_every_node(self, ctx: Context) -> list[Check]:
        """containerd's own view: ``k3s crictl pull`` on every node, with the registries.yaml it has loaded."""
        from ..script import render
        p = ctx.plan
        image = p.images[0].target + ":latest"
        nodes = [n.name for n in discover_nodes(ctx)]
        script = authflow.pull_script(image)
        results = node_exec(ctx).run_many({n: script for n in nodes}, stage=self.key, purpose="pull",
                                          timeout=min(ctx.node_timeout, 60))
        checks = []
        for node in nodes:
            r = results[node]
            v = authflow.judge_pull(r.output, r.exit_code)
            ev = {"command": render("k3s crictl pull {image}", image=image), "exit_code": r.exit_code,
                  "output": r.output.strip()[-600:]}
            if v.ok:
                checks.append(passed(f"{node}: containerd on the node pulls {image}", ev))
                continue
            d = BY_KEY.get(v.problem)
            ev["diagnosis"] = v.problem
            checks.append(failed(f"{node}: containerd on the node pulls {image}", v.cause + (f": {d.cause}" if d else ""),
                                 d.fix if d else f"read the output; kubectl describe node {node}", ev))
        return checks

    def _pull_on_every_node(self, ctx: Context) -> list[Check]:
        """The guide's pull-test pod, pinned to every node at once."""
        import secrets as _s
        p = ctx.plan
        image = p.images[0].target + ":latest"
        run = _s.token_hex(3)
        names = {}
        for n in discover_nodes(ctx):
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"ghcr2gitea-pull-test-{n.name}"[:57] + f"-{run}", "namespace":
                                p.workloads_namespace, "labels": {"ghcr2gitea.io/role": "pull-test",
                                                                  "ghcr2gitea.io/run": run}},
                   "spec": {"nodeName": n.name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                            "imagePullSecrets": [{"name": p.pull_secret}], "tolerations": [{"operator": "Exists"}],
                            "containers": [{"name": "pull-test", "image": image, "imagePullPolicy": "Always",
                                            "command": ["echo", "Pull succeeded"]}]}}
            ctx.cluster.create(pod, self.key)
            names[n.name] = pod["metadata"]["name"]
        results: dict[str, Check] = {}
        deadline = time.monotonic() + min(ctx.node_timeout, 60)
        try:
            while len(results) < len(names) and time.monotonic() < deadline:
                for node, name in names.items():
                    if node in results:
                        continue
                    pod = ctx.cluster.get("Pod", name, p.workloads_namespace) or {}
                    st = pod.get("status") or {}
                    for cs in st.get("containerStatuses") or []:
                        w = (cs.get("state") or {}).get("waiting") or {}
                        if w.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                            msg = w.get("message", "")
                            d = classify(msg)
                            results[node] = failed(f"{node}: pull-test pod pulls {image}",
                                                   (d.cause if d else "the pull failed") + f" ({msg[-160:]})",
                                                   d.fix if d else "see kubectl describe pod",
                                                   {"message": msg, **({"diagnosis": d.key} if d else {})})
                        elif cs.get("imageID") or (cs.get("state") or {}).get("terminated"):
                            results[node] = passed(f"{node}: pull-test pod pulls {image}", {"imageID": cs.get("imageID", "")})
                    if st.get("phase") in ("Succeeded", "Running") and node not in results:
                        results[node] = passed(f"{node}: pull-test pod pulls {image}", {"phase": st["phase"]})
                time.sleep(0.1)
        finally:
            for name in names.values():
                ctx.cluster.delete("Pod", name, p.workloads_namespace)
        for node in names:
            results.setdefault(node, failed(f"{node}: pull-test pod pulls {image}", "no pull result in time",
                                            f"kubectl describe node {node}"))
        return [results[n] for n in names]

    def _pull_events(self, ctx: Context) -> list[Check]:
        """Without probe pods: pull failures already recorded as Events of existing pods."""
        p = ctx.plan
        bad = []
        for ev in ctx.cluster.list("Event", None, fields="reason=Failed"):
            msg = ev.get("message", "")
            if "Failed to pull image" in msg and p.registry_host in msg:
                bad.append(ev)
        if not bad:
            return [passed("no failed pulls from the registry in Events", {"registry": p.registry_host})]
        ev = max(bad, key=lambda e: e.get("lastTimestamp") or "")
        d = classify(ev.get("message", ""))
        io = ev.get("involvedObject", {})
        return [Check("no failed pulls from the registry in Events", "warn",
                      f"{io.get('namespace')}/{io.get('name')}: " + (d.cause if d else ev.get("message", "")[-160:]),
                      d.fix if d else "see kubectl describe pod", {"message": ev.get("message", "")[-400:],
                                                                   "count": len(bad)}, gating=False)]
