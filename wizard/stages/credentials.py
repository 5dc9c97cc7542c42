"""Stage Credentials [Step 1]: the token may log in, pull and push, walked through the real token flow before anything is written."""

from __future__ import annotations

from .. import authflow
from .base import Check, Context, Stage, failed, passed, skipped


class Credentials(Stage):
    key, title, guide_step = "credentials", "Credentials", "Step 1"
    description = ("Proves the Gitea token before anything is written: Gitea must accept it on the registry's /v2/ "
                   "(an anonymous token proves nothing — Gitea hands those out), issue a push-scoped token for it, "
                   "and let that token start an upload, which is then cancelled.")

    def verify(self, ctx: Context) -> list[Check]:
        if ctx.token is None:
            return [skipped("token accepted by Gitea", "no token given",
                            "set GITEA_TOKEN or pass --token-file to check the credentials")]
        flow = authflow.operator_flows(ctx, "credentials")["credentials"]
        ev = flow.evidence()
        cause, fix = flow.explain()
        if flow.token_ok is not True:
            if flow.problem in ("wrong-token", "anonymous-token"):
                return [failed("token accepted by Gitea", cause, fix, ev)]
            return [failed("token accepted by Gitea", f"cannot check the token: {cause}",
                           fix if flow.diagnosis else f"make https://{ctx.plan.registry_host} reachable from this "
                           "machine (DNS, or network.resolve in the plan; registry.ca_file for its CA)", ev)]
        checks = [passed("token accepted by Gitea", ev, f"{ctx.plan.username}'s token is accepted by the token "
                         f"endpoint ({flow.identity or 'identity not readable'})")]
        if flow.push_ok:
            checks.append(passed("token may push", ev, "an upload was started and cancelled"))
        else:
            checks.append(failed("token may push", cause, fix, ev))
        if flow.problem in ("realm-plain-http", "realm-host-mismatch"):
            # the token works, but every client would be sent to this realm: over HTTP, or to another host
            checks.append(failed("the realm Gitea names is usable", cause, fix, ev))
        return checks
