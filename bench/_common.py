"""Shared pieces of the benchmarks: a sandbox in its own process, the CLI as a subprocess, tables.

Everything runs on loopback. Every process started here is stopped by its PID in a ``finally``
(SIGTERM, then SIGKILL), and every temporary folder is removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cli() -> list[str]:
    """The installed ``ghcr2gitea`` next to this interpreter (the real entry point), else the module."""
    exe = Path(PYTHON).parent / "ghcr2gitea"
    return [str(exe)] if exe.exists() else [PYTHON, "-m", "ghcr2gitea"]


@dataclass
class Row:
    """One line of the summary: a figure, its target (if any) and PASS/MISS."""
    bench: str
    figure: str
    value: str
    target: str = ""
    verdict: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def median(xs) -> float:
    return statistics.median(xs)


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = lambda cells: indent + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(headers), indent + "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL; always reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@dataclass
class CliRun:
    rc: int
    wall: float
    stdout: str
    stderr: str

    def tail(self, n: int = 15) -> str:
        lines = (self.stdout + self.stderr).strip().splitlines()
        return "\n".join("    | " + x for x in lines[-n:])


class SandboxProc:
    """``ghcr2gitea sandbox --dir D ARGS`` in its own process, ready once it prints ``sandbox ready``."""

    def __init__(self, *args: str, ready_timeout: float = 60.0):
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.tmp: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.api_url = ""
        self.ready_after = 0.0  # seconds from spawn to the "sandbox ready" line
        self._ssl: ssl.SSLContext | None = None

    @property
    def dir(self) -> Path:
        return self.tmp / "sb"

    @property
    def log(self) -> Path:
        return self.tmp / "sandbox.log"

    def __enter__(self) -> SandboxProc:
        self.tmp = Path(tempfile.mkdtemp(prefix="ghcr2gitea-bench-"))
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        t0 = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*cli(), "sandbox", "--dir", str(self.dir), *self.args], cwd=REPO,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + self.ready_timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "sandbox ready" in text and " API " in text:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited with {self.proc.returncode} before it was ready:\n{text}")
            time.sleep(0.02)
        else:
            raise RuntimeError(f"sandbox not ready after {self.ready_timeout:.0f} s:\n{text}")
        self.ready_after = time.monotonic() - t0
        m = re.search(r"API (https://\S+)", text)
        kc = yaml.safe_load((self.dir / "kubeconfig").read_text())
        cluster = kc["clusters"][0]["cluster"]
        self.api_url = m.group(1) if m else cluster["server"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self._ssl = ssl.create_default_context(cadata=ca)

    def close(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ clients
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.dir / "kubeconfig")
        env["GITEA_TOKEN"] = (self.dir / "token").read_text().strip()
        env.pop("NO_COLOR", None)
        return env

    def state(self) -> dict:
        """The state JSON at ``D/state-url`` (not itself counted in ``requests``): the embedded API serves it
        over its TLS, beside a real API server it is plain HTTP."""
        url = (self.dir / "state-url").read_text().strip()
        with urllib.request.urlopen(url, context=self._ssl if url.startswith("https:") else None, timeout=60) as r:
            return json.loads(r.read())

    def run(self, *args: str, timeout: float = 180.0) -> CliRun:
        """``ghcr2gitea ARGS --plan D/plan.yaml`` with KUBECONFIG and GITEA_TOKEN from the sandbox folder."""
        argv = [*cli(), *args, "--plan", str(self.dir / "plan.yaml")]
        t0 = time.perf_counter()
        # subprocess.run kills the child (by its PID) on timeout or on any exception while waiting
        p = subprocess.run(argv, cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        return CliRun(p.returncode, time.perf_counter() - t0, p.stdout, p.stderr)


def run_python(code: str, *args: str, timeout: float = 120.0) -> CliRun:
    """``python -c CODE ARGS`` in a fresh interpreter (killed on timeout or error)."""
    t0 = time.perf_counter()
    p = subprocess.run([PYTHON, "-c", code, *args], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    return CliRun(p.returncode, time.perf_counter() - t0, p.stdout, p.stderr)


def last_json(text: str) -> dict:
    """The last line of ``text`` that is a JSON object (a child's report)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON report in:\n{text}")
