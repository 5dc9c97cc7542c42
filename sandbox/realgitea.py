"""A real Gitea on loopback: sqlite, the container registry on, an organisation, a pushing and a reading user.

Built from the Go module proxy by ``scripts/build-real gitea`` into the cache (``GHCR2GITEA_CACHE``,
default ``/var/cache/ghcr2gitea``). This is the oracle our Gitea model (``sandbox/gitea.py``) is
compared with: the registry's ``/v2/`` challenge, the realm it derives, ``/v2/token``'s answers, error
bodies, token scopes and package permissions are whatever this Gitea version really does.

Set-up is what an operator does by hand, through Gitea's own commands: ``gitea migrate``, then
``gitea admin user create`` and ``gitea admin user generate-access-token --scopes …`` per user; the
organisation and a read-only team through the API with the admin's token. Tokens are written to files
(mode 0600) and never printed. The process is started here and stopped by its PID in ``stop``.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import getpass
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .realapi import CACHE, ComponentMissing, binary, free_port

ADMIN = "gitea-admin"


def assets(name: str = "gitea") -> Path:
    """Gitea's options/ and templates/ for the binary ``name`` (built without bindata, it reads them from disk)."""
    path = CACHE / "share" / name
    if not (path / "options" / "locale").is_dir():
        raise ComponentMissing(f"Gitea's options are missing in {path}: run scripts/build-real {name}")
    return path


@dataclass
class GiteaUser:
    name: str
    token_file: Path
    scopes: tuple[str, ...]

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()


@dataclass
class RealGitea:
    """One Gitea process in ``dir``. ``root_url`` is Gitea's ROOT_URL (the realm host before 1.22.1)."""

    dir: Path
    root_url: str = ""
    org: str = "acme"
    writer: str = "registry-user"
    reader: str = "ci-reader"
    org_visibility: str = "private"  # public owners' packages may be pulled anonymously
    # "auto" is 1.26's default (the realm follows the request's Host); "never" pins it to ROOT_URL, the fix
    # an operator applies when a proxy path rewrites X-Forwarded-Proto (docs/sandbox.md)
    public_url_detection: str = "auto"
    # the binary scripts/build-real made: "gitea" (the current release) or "gitea-1.21" (before 1.22.1, where
    # the realm is ROOT_URL + v2/token whatever the request says)
    binary_name: str = "gitea"
    port: int = 0
    proc: subprocess.Popen | None = None
    users: dict[str, GiteaUser] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.dir / "app.ini"

    def version(self) -> str:
        return self._api("GET", "/api/v1/version")["version"]

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 60.0) -> RealGitea:
        exe = binary(self.binary_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.root_url = self.root_url or f"{self.url}/"
        self._write_config()
        self._gitea("migrate")
        log = (self.dir / "gitea.log").open("ab")
        self.proc = subprocess.Popen([str(exe), "web", "--config", str(self.config)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
                                     cwd=self.dir, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        self._create_user(ADMIN, admin=True, scopes=("write:admin", "write:organization", "write:user",
                                                     "write:package"))
        self._create_user(self.writer, scopes=("write:package", "read:user"))
        self._create_user(self.reader, scopes=("read:package",))
        self._create_org()
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ set-up
    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITEA_")}
        env.update(GITEA_WORK_DIR=str(self.dir), GITEA_CUSTOM=str(self.dir / "custom"), HOME=str(self.dir))
        return env

    def _write_config(self) -> None:
        d = self.dir
        ini = configparser.ConfigParser(interpolation=None)
        ini.optionxform = str  # Gitea's keys are upper case
        ini.read_dict({
            # CI runs as root: Gitea refuses to unless its config says so (the data dir is this run's own)
            "DEFAULT": {"APP_NAME": "ghcr2gitea test Gitea", "RUN_MODE": "prod", "WORK_PATH": str(d),
                        "RUN_USER": getpass.getuser(),
                        "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT": "true" if os.geteuid() == 0 else "false"},
            "server": {"PROTOCOL": "http", "HTTP_ADDR": "127.0.0.1", "HTTP_PORT": str(self.port),
                       "ROOT_URL": self.root_url, "DISABLE_SSH": "true", "START_SSH_SERVER": "false",
                       "OFFLINE_MODE": "true", "LFS_START_SERVER": "false", "APP_DATA_PATH": str(d / "data"),
                       # built without bindata: locales and templates are read from the files build-real keeps
                       "STATIC_ROOT_PATH": str(assets(self.binary_name)), "PUBLIC_URL_DETECTION": self.public_url_detection},
            "database": {"DB_TYPE": "sqlite3", "PATH": str(d / "data" / "gitea.db"), "SQLITE_JOURNAL_MODE": "WAL"},
            "security": {"INSTALL_LOCK": "true", "SECRET_KEY": secrets.token_hex(32),
                         "INTERNAL_TOKEN": secrets.token_hex(32), "PASSWORD_HASH_ALGO": "pbkdf2_hi"},
            "oauth2": {"JWT_SECRET": secrets.token_urlsafe(32)},
            "service": {"DISABLE_REGISTRATION": "true", "REQUIRE_SIGNIN_VIEW": "false",
                        "DEFAULT_KEEP_EMAIL_PRIVATE": "true"},
            "packages": {"ENABLED": "true"},
            "repository": {"ROOT": str(d / "repos")},
            "log": {"MODE": "file", "LEVEL": "Warn", "ROOT_PATH": str(d / "log")},
            "cron": {"ENABLED": "false"},
            "indexer": {"ISSUE_INDEXER_TYPE": "db", "REPO_INDEXER_ENABLED": "false"},
            "mailer": {"ENABLED": "false"},
            "session": {"PROVIDER": "memory"},
            "cache": {"ADAPTER": "memory"},
            "queue": {"TYPE": "level", "DATADIR": str(d / "queues")},
            "metrics": {"ENABLED": "false"},
        })
        buf = io.StringIO()
        ini.write(buf)
        self.config.write_text(buf.getvalue())
        self.config.chmod(0o600)

    def _gitea(self, *args: str, secret_out: Path | None = None) -> str:
        """Run one ``gitea`` admin command; with ``secret_out`` its stdout (a token) goes to that file only."""
        r = subprocess.run([str(binary(self.binary_name)), *args, "--config", str(self.config)], capture_output=True,
                           text=True, env=self._env(), cwd=self.dir, timeout=120)
        if r.returncode != 0:  # stderr of these commands holds no secret: tokens are only ever on stdout
            raise RuntimeError(f"gitea {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                               f"{r.stderr.strip()[-400:]}")
        if secret_out is not None:
            # as root Gitea logs a warning to stdout before the token: keep only a line that is a token
            tokens = [line for line in r.stdout.splitlines() if re.fullmatch(r"[0-9a-f]{40}", line.strip())]
            if len(tokens) != 1:
                raise RuntimeError(f"gitea {args[0]} {args[1]}: no access token in its output")  # never the output
            secret_out.write_text(tokens[0].strip() + "\n")
            secret_out.chmod(0o600)
            return ""
        return r.stdout

    def _create_user(self, name: str, *, scopes: tuple[str, ...], admin: bool = False) -> None:
        self._gitea("admin", "user", "create", "--username", name, "--password", secrets.token_urlsafe(18),
                    "--email", f"{name}@example.test", "--must-change-password=false", *(["--admin"] if admin else []))
        token_file = self.dir / f"{name}.token"
        self._gitea("admin", "user", "generate-access-token", "--username", name, "--token-name", "ghcr2gitea",
                    "--scopes", ",".join(scopes), "--raw", secret_out=token_file)
        self.users[name] = GiteaUser(name, token_file, scopes)

    def _create_org(self) -> None:
        self._api("POST", "/api/v1/orgs", {"username": self.org, "visibility": self.org_visibility})
        owners = self._api("GET", f"/api/v1/orgs/{self.org}/teams")[0]["id"]
        self._api("PUT", f"/api/v1/teams/{owners}/members/{self.writer}")
        team = self._api("POST", f"/api/v1/orgs/{self.org}/teams", {
            "name": "readers", "permission": "read", "includes_all_repositories": True,
            "units": ["repo.packages"], "units_map": {"repo.packages": "read"}})
        self._api("PUT", f"/api/v1/teams/{team['id']}/members/{self.reader}")

    def _api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        admin = self.users.get(ADMIN)
        if admin is not None:
            req.add_header("Authorization", f"token {admin.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Gitea {method} {path}: {e.code} {e.read()[:300]!r}") from None
        return json.loads(data) if data.strip() else None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.dir / "gitea.log").read_text(errors="replace")[-600:]
                raise RuntimeError(f"gitea exited with {self.proc.returncode}: {tail}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/api/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gitea not ready within {timeout:.0f} s (see {self.dir}/gitea.log)")
            time.sleep(0.1)


class RealGiteaBackend:
    """A real Gitea where the sandbox's Gitea model would be: the ``gitea`` pods' port 3000 forwards to it.

    Requests arrive as the simulated Traefik (or a pod) sends them — ``Host`` and ``X-Forwarded-*`` kept —
    and are passed to the real process over loopback HTTP, so the realm, the errors and the upload rules
    are this Gitea version's own. ``tag_digests`` reads the registry back for the state JSON.
    """

    def __init__(self, real: RealGitea, repos: list[str]):
        self.real = real
        self.repos = list(repos)  # the images the state JSON reports (Gitea has no /v2/_catalog)
        self.duplicate_key = False  # the model's switch; real Gitea races on its own
        self.requests: list = []
        self._session = None

    @property
    def root_url(self) -> str:
        return self.real.root_url

    async def handle(self, req):
        import aiohttp

        from .http import Headers, HttpResponse
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        parts = req.parts
        url = f"{self.real.url}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in req.headers.items if k.lower() not in ("content-length", "transfer-encoding")]
        if not any(k.lower() == "host" for k, _ in headers):
            headers.append(("Host", parts.netloc))
        async with self._session.request(req.method, url, headers=headers, data=req.body or None,
                                         allow_redirects=False, skip_auto_headers=("User-Agent",)) as r:
            body = await r.read()
            out = Headers([(k, v) for k, v in r.headers.items()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection")])
            return HttpResponse(r.status, out, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def store(self, repo: str, tag: str, content) -> str:
        """Push ``content`` (an image with its children and blobs) as the org's writer, over the registry API."""
        from . import oci
        auth = "Basic " + base64.b64encode(f"{self.real.writer}:{self.real.users[self.real.writer].token}"
                                           .encode()).decode()

        def call(method: str, path: str, body: bytes = b"", **hdrs: str) -> tuple[int, dict]:
            req = urllib.request.Request(self.real.url + path, method=method, data=body or None,
                                         headers={"Authorization": auth, **hdrs})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as e:
                raise RuntimeError(f"pushing {repo}: {method} {path.split('?')[0]} answered {e.code}") from None

        for digest, data in content.blobs.items():
            _, h = call("POST", f"/v2/{repo}/blobs/uploads/")
            loc = h["Location"]
            loc = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
            call("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={digest}", data,
                 **{"Content-Type": "application/octet-stream"})
        top = oci.top(content)
        for digest, (media_type, body) in sorted(content.manifests.items(), key=lambda m: m[0] == top):
            call("PUT", f"/v2/{repo}/manifests/{tag if digest == top else digest}", body,
                 **{"Content-Type": media_type})
        return top

    def tag_digests(self) -> dict[str, str]:
        """``{"<repo>:<tag>": digest}`` for the plan's images, read from the real registry."""
        from .oci import MANIFEST_TYPES
        auth = "Basic " + base64.b64encode(f"{self.real.writer}:{self.real.users[self.real.writer].token}"
                                           .encode()).decode()
        out = {}
        for repo in self.repos:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"{self.real.url}/v2/{repo}/tags/list", headers={"Authorization": auth}), timeout=10) as r:
                    tags = json.loads(r.read()).get("tags") or []
            except (urllib.error.HTTPError, OSError, ValueError):
                continue
            for tag in sorted(tags):
                req = urllib.request.Request(f"{self.real.url}/v2/{repo}/manifests/{tag}", method="HEAD",
                                             headers={"Authorization": auth, "Accept": ", ".join(MANIFEST_TYPES)})
                with contextlib.suppress(urllib.error.HTTPError, OSError), urllib.request.urlopen(req, timeout=10) as r:
                    out[f"{repo}:{tag}"] = r.headers["Docker-Content-Digest"]
        return out
