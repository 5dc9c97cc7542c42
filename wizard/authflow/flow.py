"""The flow model: a Docker v2 token-flow walk as values — each hop with its evidence (URL, status, the headers that
matter, timing, what a TLS endpoint presented) and the Flow that holds them, its finding and its explanation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnose import BY_KEY, Diagnosis

SERVICE = "container_registry"
KEEP_HEADERS = ("www-authenticate", "location", "docker-distribution-api-version", "content-type", "server",
                "docker-upload-uuid", "docker-content-digest", "content-length")


# ------------------------------------------------------------------------------------ values
@dataclass(frozen=True)
class Hop:
    step: str
    method: str
    url: str
    status: int | None
    ms: float
    at: float = 0.0  # ms after the probe started: shows which hops overlapped
    headers: dict = field(default_factory=dict)
    error: str = ""
    tls: str = ""  # the endpoint's one-line TLS verdict (HTTPS hops)
    cert: str = ""  # the presented leaf certificate, described, with that verdict

    def to_dict(self) -> dict:
        d = {"step": self.step, "request": f"{self.method} {self.url}", "status": self.status,
             "ms": round(self.ms, 1), "at_ms": round(self.at, 1), "headers": self.headers}
        if self.error:
            d["error"] = self.error
        if self.tls:
            d["tls"] = self.tls
        if self.cert:
            d["cert"] = self.cert
        return d


@dataclass
class Flow:
    """One check's walk: its hops, what it found, and the catalogue key of the first problem."""

    name: str
    hops: list[Hop] = field(default_factory=list)
    problem: str = ""  # catalogue key; "" = no problem found
    cause: str = ""
    notes: list[str] = field(default_factory=list)
    realm: str = ""
    service: str = ""
    scope: str = ""
    token_ok: bool | None = None
    pull_ok: bool | None = None
    push_ok: bool | None = None
    identity: str | None = None
    tls: dict[str, dict] = field(default_factory=dict)
    ms: float = 0.0

    def fail(self, key: str, cause: str) -> None:
        """Record a finding; the first one is the verdict, later ones become notes."""
        if not self.problem:
            self.problem, self.cause = key, cause
        elif f"also: {cause}" not in self.notes and cause != self.cause:
            self.notes.append(f"also: {cause}")

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def verdict(self) -> str:
        return self.problem or "ok"

    @property
    def diagnosis(self) -> Diagnosis | None:
        return BY_KEY.get(self.problem)

    def explain(self) -> tuple[str, str]:
        """(cause, fix): what was observed and why, and what to do — one line each."""
        d = self.diagnosis
        if d is None:
            return self.cause, "see the evidence: every request with its status, headers and certificate"
        return (f"{self.cause}: {d.cause}" if self.cause else d.cause), d.fix

    def evidence(self) -> dict:
        ev: dict = {"hops": [h.to_dict() for h in self.hops], "ms": round(self.ms, 1)}
        if self.realm:
            ev["realm"] = self.realm
        if self.tls:
            ev["tls"] = self.tls
        if self.notes:
            ev["notes"] = self.notes
        if self.problem:
            ev["diagnosis"] = self.problem
        return ev
