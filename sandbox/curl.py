"""``curl`` and a minimal busybox ``wget`` for simulated pods, speaking over the sandbox's network.

Both are shell commands (see ``shell.CommandFn``) built around a fetch function that
carries one HTTP exchange through the virtual network. Output, exit codes and error
texts follow curl 8.5 and busybox wget closely enough that the wizard's probes parse
them exactly as they would parse the real tools' output inside a pod.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit, urlunsplit

from .http import Headers, HttpRequest, HttpResponse, NetError, TLSConfig
from .memfs import FSError
from .shell import CommandFn, ShellContext

FetchFn = Callable[[HttpRequest, TLSConfig, dict[tuple[str, int], str], float], Awaitable[HttpResponse]]

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Alpine's and Debian's bundle path
CURL_AGENT = "curl/8.5.0"
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_TRY_HELP = "curl: try 'curl --help' or 'curl --manual' for more information\n"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {_reason(status)}".rstrip()


def _trust(ctx: ShellContext, system_roots_pem: bytes, cacert: str | None = None) -> TLSConfig:
    """Which CA certificates a verifying client in this pod trusts: --cacert, SSL_CERT_FILE, the bundle, the OS."""
    fs = ctx.fs
    env_file = ctx.env.get("SSL_CERT_FILE")
    if cacert is not None:
        pem = fs.read(cacert)  # the caller checked it exists
    elif env_file and fs.isfile(env_file):
        pem = fs.read(env_file)
    elif fs.isfile(CA_BUNDLE):
        pem = fs.read(CA_BUNDLE)
    else:
        pem = system_roots_pem
    return TLSConfig(verify=True, ca_pems=(pem,), system_roots=False)


def _connect_address(host: str, port: int, resolve: dict[tuple[str, int], str]) -> str:
    # The virtual network resolves names inside fetch; --resolve is the one address known here.
    return resolve.get((host, port), host)


# --------------------------------------------------------------------------------------------
# curl


class _OptionError(Exception):
    pass


@dataclass
class _CurlOptions:
    silent: bool = False
    show_error: bool = False
    insecure: bool = False
    verbose: bool = False
    include: bool = False
    head: bool = False
    fail: bool = False
    location: bool = False
    output: str | None = None
    write_out: str | None = None
    user: str | None = None
    method: str | None = None
    user_agent: str = CURL_AGENT
    cacert: str | None = None
    connect_timeout: float | None = None
    max_time: float | None = None
    headers: list[str] = field(default_factory=list)
    data: list[tuple[str, str]] = field(default_factory=list)  # (kind, value): data | raw | binary
    resolve: dict[tuple[str, int], str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)


# fmt: off
_CURL_FLAGS = {
    "s": "silent", "S": "show_error", "k": "insecure", "v": "verbose", "i": "include", "I": "head",
    "f": "fail", "L": "location",
    "--silent": "silent", "--show-error": "show_error", "--insecure": "insecure", "--verbose": "verbose",
    "--include": "include", "--head": "head", "--fail": "fail", "--location": "location",
}
_CURL_ARGS = {
    "o": "output", "w": "write-out", "u": "user", "H": "header", "X": "request", "d": "data",
    "A": "user-agent", "m": "max-time",
    "--output": "output", "--write-out": "write-out", "--user": "user", "--header": "header",
    "--request": "request", "--data": "data", "--data-ascii": "data", "--data-raw": "data-raw",
    "--data-binary": "data-binary", "--user-agent": "user-agent", "--cacert": "cacert",
    "--resolve": "resolve", "--connect-timeout": "connect-timeout", "--max-time": "max-time", "--url": "url",
}
# fmt: on
_CURL_IGNORED = {"--http1.1"}  # the virtual network only speaks HTTP/1.1 anyway


def _parse_curl(args: list[str]) -> _CurlOptions:
    opts = _CurlOptions()
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg in _CURL_IGNORED:
            continue
        if arg.startswith("--"):
            if arg in _CURL_FLAGS:
                setattr(opts, _CURL_FLAGS[arg], True)
            elif arg in _CURL_ARGS:
                if not args:
                    raise _OptionError(f"curl: option {arg}: requires parameter\n{_TRY_HELP}")
                _curl_value(opts, arg, _CURL_ARGS[arg], args.pop(0))
            else:
                raise _OptionError(f"curl: option {arg}: is unknown\n{_TRY_HELP}")
        elif arg.startswith("-") and len(arg) > 1:
            for k, letter in enumerate(arg[1:], start=1):
                if letter in _CURL_FLAGS:
                    setattr(opts, _CURL_FLAGS[letter], True)
                elif letter in _CURL_ARGS:
                    value = arg[k + 1 :]
                    if not value:
                        if not args:
                            raise _OptionError(f"curl: option -{letter}: requires parameter\n{_TRY_HELP}")
                        value = args.pop(0)
                    _curl_value(opts, f"-{letter}", _CURL_ARGS[letter], value)
                    break
                else:
                    raise _OptionError(f"curl: option {arg}: is unknown\n{_TRY_HELP}")
        else:
            opts.urls.append(arg)
    return opts


def _curl_value(opts: _CurlOptions, flag: str, name: str, value: str) -> None:
    if name in ("max-time", "connect-timeout"):
        try:
            seconds = float(value)
        except ValueError:
            raise _OptionError(
                f"curl: option {flag}: expected a proper numerical parameter\n{_TRY_HELP}"
            ) from None
        setattr(opts, name.replace("-", "_"), seconds)
    elif name == "resolve":
        m = re.fullmatch(r"([^:]+):(\d+):(.+)", value)
        if not m:
            raise _OptionError(f"curl: option {flag}: is badly used here\n{_TRY_HELP}")
        opts.resolve[(m.group(1), int(m.group(2)))] = m.group(3)
    elif name == "header":
        opts.headers.append(value)
    elif name.startswith("data"):
        opts.data.append(({"data": "data", "data-raw": "raw", "data-binary": "binary"}[name], value))
    elif name == "url":
        opts.urls.append(value)
    else:
        attr = {"write-out": "write_out", "request": "method", "user-agent": "user_agent"}.get(name, name)
        setattr(opts, attr, value)


class _CurlFailure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def make_curl(fetch: FetchFn, system_roots_pem: bytes) -> CommandFn:
    """The ``curl`` command of a simulated pod, fetching through ``fetch``."""

    async def curl(argv: list[str], stdin: bytes, ctx: ShellContext) -> tuple[int, bytes, bytes]:
        try:
            opts = _parse_curl(argv[1:])
        except _OptionError as e:
            return 2, b"", str(e).encode()
        if not opts.urls:
            return 2, b"", ("curl: no URL specified!\n" + _TRY_HELP).encode()
        out, err, rc = bytearray(), bytearray(), 0
        for url in opts.urls:
            code = await _Transfer(opts, ctx, fetch, system_roots_pem, stdin, out, err).run(url)
            rc = code or rc
        return rc, bytes(out), bytes(err)

    return curl


class _Transfer:
    """One URL's worth of curl: request, redirects, output, --write-out and the error line."""

    def __init__(
        self,
        opts: _CurlOptions,
        ctx: ShellContext,
        fetch: FetchFn,
        roots: bytes,
        stdin: bytes,
        out: bytearray,
        err: bytearray,
    ):
        self.opts, self.ctx, self.fetch, self.roots, self.stdin = opts, ctx, fetch, roots, stdin
        self.out, self.err = out, err
        self.response: HttpResponse | None = None
        self.url = ""
        self.redirects = 0
        self.method = ""
        self.redirect_headers = b""  # -i -L shows every response's headers

    async def run(self, url: str) -> int:
        opts = self.opts
        try:
            await self._exchange(url)
            code = 0
            if opts.fail and self.response.status >= 400:
                raise _CurlFailure(22, f"The requested URL returned error: {self.response.status}")
            self._deliver()
        except _CurlFailure as e:
            code = e.code
            if not opts.silent or opts.show_error:
                self.err += f"curl: ({e.code}) {e.message}\n".encode()
        if opts.write_out is not None:
            self.out += self._write_out(opts.write_out, code).encode()
        return code

    async def _exchange(self, url: str) -> None:
        opts = self.opts
        if "://" not in url:
            url = "http://" + url  # curl guesses http for a bare host
        body = self._body()
        self.method = opts.method or ("HEAD" if opts.head else "POST" if body is not None else "GET")
        headers = self._headers(url, body)
        for (host, port), addr in opts.resolve.items():
            self._verbose(f"* Added {host}:{port}:{addr} to DNS cache\n")
        while True:
            parts = urlsplit(url)
            if not parts.path:
                url = urlunsplit(parts._replace(path="/"))  # curl asks for "/" and reports it so
            self.url = url
            request = HttpRequest(self.method, url, headers.copy(), body or b"")
            tls = self._tls() if request.scheme == "https" else TLSConfig()
            addr = _connect_address(request.host, request.port, opts.resolve)
            self._verbose(f"*   Trying {addr}:{request.port}...\n")
            timeout = opts.max_time or opts.connect_timeout or 300.0
            try:
                if opts.max_time:
                    resp = await asyncio.wait_for(
                        self.fetch(request, tls, dict(opts.resolve), timeout), opts.max_time
                    )
                else:
                    resp = await self.fetch(request, tls, dict(opts.resolve), timeout)
            except NetError as e:
                self._verbose(f"* {e.curl_message}\n* Closing connection\n")
                raise _CurlFailure(e.curl_code, e.curl_message) from None
            except TimeoutError:
                ms = int(opts.max_time * 1000)
                raise _CurlFailure(
                    28, f"Operation timed out after {ms} milliseconds with 0 bytes received"
                ) from None
            self.response = resp
            self._log_exchange(request, resp, addr)
            location = resp.headers.get("Location")
            if not (opts.location and resp.status in _REDIRECTS and location):
                return
            if opts.include:
                self.redirect_headers += self._header_block(resp)
            self.redirects += 1
            if self.redirects > MAX_REDIRECTS:
                raise _CurlFailure(47, f"Maximum ({MAX_REDIRECTS}) redirects followed")
            target = urljoin(url, location)
            self._verbose(f"* Issue another request to this URL: '{target}'\n")
            if resp.status == 303 or (resp.status in (301, 302) and self.method == "POST"):
                self.method, body = ("HEAD" if self.method == "HEAD" else "GET"), None
                for name in ("Content-Length", "Content-Type"):
                    headers.items = [(k, v) for k, v in headers.items if k.lower() != name.lower()]
            new = urlsplit(target)
            if new.netloc != urlsplit(url).netloc:
                # like curl without --location-trusted: credentials stay with the first host
                headers.items = [(k, v) for k, v in headers.items if k.lower() != "authorization"]
            headers.items = [(k, new.netloc if k.lower() == "host" else v) for k, v in headers.items]
            url = target

    def _tls(self) -> TLSConfig:
        if self.opts.insecure:
            return TLSConfig(verify=False)
        cacert = self.opts.cacert
        if cacert is not None and not self.ctx.fs.isfile(cacert):
            raise _CurlFailure(77, f"error setting certificate file: {cacert}")
        return _trust(self.ctx, self.roots, cacert)

    def _body(self) -> bytes | None:
        if not self.opts.data:
            return None
        chunks = []
        for kind, value in self.opts.data:
            if kind != "raw" and value.startswith("@"):
                name = value[1:]
                try:
                    data = self.stdin if name == "-" else self.ctx.fs.read(name)
                except FSError:
                    self.err += f'Warning: Couldn\'t read data from file "{name}", this makes an empty POST.\n'.encode()
                    data = b""
                chunks.append(data if kind == "binary" else data.replace(b"\r", b"").replace(b"\n", b""))
            else:
                chunks.append(value.encode())
        return b"&".join(chunks)

    def _headers(self, url: str, body: bytes | None) -> Headers:
        opts = self.opts
        builtin = [("Host", urlsplit(url).netloc)]
        if opts.user is not None:
            user = opts.user if ":" in opts.user else opts.user + ":"
            builtin.append(("Authorization", "Basic " + base64.b64encode(user.encode()).decode()))
        if opts.user_agent:
            builtin.append(("User-Agent", opts.user_agent))
        builtin.append(("Accept", "*/*"))
        custom: list[tuple[str, str]] = []
        removed: set[str] = set()
        for line in opts.headers:
            if m := re.fullmatch(r"([^:;\s]+)\s*([:;])\s*(.*)", line):
                name, sep, value = m.groups()
                removed.add(name.lower())
                if value or sep == ";":  # "Name:" removes a header, "Name;" sends it empty
                    custom.append((name, value))
        items = [(k, v) for k, v in builtin if k.lower() not in removed] + custom
        if body is not None:
            items += [(k, v) for k, v in (("Content-Length", str(len(body))),) if k.lower() not in removed]
            if "content-type" not in removed:
                items.append(("Content-Type", "application/x-www-form-urlencoded"))
        return Headers(items)

    def _log_exchange(self, request: HttpRequest, resp: HttpResponse, addr: str) -> None:
        if not self.opts.verbose:
            return
        target = request.path + (f"?{request.query}" if request.query else "")
        lines = [f"* Connected to {request.host} ({addr}) port {request.port}\n"]
        lines.append(f"> {request.method} {target} HTTP/1.1\r\n")
        lines += [f"> {k}: {v}\r\n" for k, v in request.headers.items]
        lines.append("> \r\n")
        lines.append(f"< {_status_line(resp.status)}\r\n")
        lines += [f"< {k}: {v}\r\n" for k, v in resp.headers.items]
        lines.append("< \r\n")
        lines.append(f"* Connection #0 to host {request.host} left intact\n")
        self.err += "".join(lines).encode()

    def _verbose(self, text: str) -> None:
        if self.opts.verbose:
            self.err += text.encode()

    @staticmethod
    def _header_block(resp: HttpResponse) -> bytes:
        lines = [_status_line(resp.status)] + [f"{k}: {v}" for k, v in resp.headers.items]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _deliver(self) -> None:
        """Write headers (-i/-I) and body to stdout or the -o file."""
        resp, opts = self.response, self.opts
        data = self.redirect_headers
        if opts.include or opts.head:
            data += self._header_block(resp)
        if not opts.head:
            data += resp.body
        target = opts.output
        if target in (None, "-", "/dev/stdout"):
            self.out += data
        elif target == "/dev/stderr":
            self.err += data
        else:
            try:
                self.ctx.fs.write(target, data)
            except FSError as e:
                self.err += f"Warning: Failed to open the file {target}: {e}\n".encode()
                raise _CurlFailure(23, "Failure writing output to destination") from None

    def _write_out(self, fmt: str, code: int) -> str:
        resp = self.response
        values = {
            "http_code": f"{resp.status:03d}" if resp else "000",
            "response_code": f"{resp.status:03d}" if resp else "000",
            "url_effective": self.url,
            "url": self.url,
            "content_type": (resp.headers.get("Content-Type") or "") if resp else "",
            "exitcode": str(code),
            "size_download": str(len(resp.body)) if resp and not self.opts.head else "0",
            "num_redirects": str(self.redirects),
            "redirect_url": urljoin(self.url, resp.headers.get("Location") or "")
            if resp and resp.status in _REDIRECTS and resp.headers.get("Location")
            else "",
            "method": self.method,
            "scheme": urlsplit(self.url).scheme.upper(),
        }

        def expand(m: re.Match) -> str:
            if m.group(1) is not None:
                return values.get(m.group(1), "")
            if m.group(2) is not None:
                return (resp.headers.get(m.group(2)) or "") if resp else ""
            return {"%%": "%", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\"}[m.group()]

        unknown = [v for v in re.findall(r"%\{([^}]*)\}", fmt) if v not in values]
        for name in unknown:
            self.err += f"curl: unknown --write-out variable: '{name}'\n".encode()
        return re.sub(r"%\{([^}]*)\}|%header\{([^}]*)\}|%%|\\[nrt\\]", expand, fmt)


# --------------------------------------------------------------------------------------------
# busybox wget


def make_wget(fetch: FetchFn, system_roots_pem: bytes) -> CommandFn:
    """The busybox ``wget`` of a simulated pod (-q -O -S -T --header --no-check-certificate)."""

    async def wget(argv: list[str], stdin: bytes, ctx: ShellContext) -> tuple[int, bytes, bytes]:
        quiet = show_headers = insecure = False
        output: str | None = None
        timeout, agent, post = 900.0, "Wget", None
        headers: list[str] = []
        urls: list[str] = []
        args = list(argv[1:])
        try:
            while args:
                arg = args.pop(0)
                name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")

                def value(name: str = name, eq: str = eq, inline: str = inline) -> str:
                    if eq:
                        return inline
                    if not args:
                        raise _OptionError(f"wget: option requires an argument -- '{name.lstrip('-')}'")
                    return args.pop(0)

                if name in ("--quiet",):
                    quiet = True
                elif name == "--no-check-certificate":
                    insecure = True
                elif name == "--server-response":
                    show_headers = True
                elif name == "--output-document":
                    output = value()
                elif name == "--header":
                    headers.append(value())
                elif name == "--timeout":
                    timeout = float(value())
                elif name == "--user-agent":
                    agent = value()
                elif name == "--post-data":
                    post = value()
                elif arg.startswith("--"):
                    raise _OptionError(f"wget: unrecognized option '{arg}'")
                elif arg.startswith("-") and len(arg) > 1:
                    for k, letter in enumerate(arg[1:], start=1):
                        if letter == "q":
                            quiet = True
                        elif letter == "S":
                            show_headers = True
                        elif letter in "OTU":
                            rest = arg[k + 1 :] or value(letter)
                            if letter == "O":
                                output = rest
                            elif letter == "T":
                                timeout = float(rest)
                            else:
                                agent = rest
                            break
                        else:
                            raise _OptionError(f"wget: invalid option -- '{letter}'")
                else:
                    urls.append(arg)
        except (_OptionError, ValueError) as e:
            return 1, b"", f"{e}\n".encode()
        if not urls:
            return 1, b"", b"wget: missing URL\n"
        out, err = bytearray(), bytearray()
        url = urls[0] if "://" in urls[0] else "http://" + urls[0]
        hdrs = Headers([("Host", urlsplit(url).netloc), ("User-Agent", agent)])
        for line in headers:
            name, _, val = line.partition(":")
            hdrs.set(name.strip(), val.strip())
        body = post.encode() if post is not None else b""
        if post is not None:
            hdrs.set("Content-Type", "application/x-www-form-urlencoded")
        for _hop in range(20):
            req = HttpRequest("POST" if post is not None else "GET", url, hdrs.copy(), body)
            if not quiet:
                err += f"Connecting to {req.host} ({_connect_address(req.host, req.port, {})}:{req.port})\n".encode()
            tls = TLSConfig()
            if req.scheme == "https":
                tls = TLSConfig(verify=False) if insecure else _trust(ctx, system_roots_pem)
            try:
                resp = await fetch(req, tls, {}, timeout)
            except NetError as e:
                return (5 if e.kind == "tls" else 4), bytes(out), bytes(err) + _wget_error(e, req).encode()
            if show_headers:
                lines = [_status_line(resp.status)] + [f"{k}: {v}" for k, v in resp.headers.items]
                err += "".join(f"  {line}\n" for line in lines).encode()
            location = resp.headers.get("Location")
            if resp.status in _REDIRECTS and location:
                url = urljoin(url, location)
                hdrs.set("Host", urlsplit(url).netloc)
                continue
            break
        else:
            return 1, bytes(out), bytes(err) + b"wget: too many redirections\n"
        if resp.status >= 400:
            return (
                8,
                bytes(out),
                bytes(err) + f"wget: server returned error: {_status_line(resp.status)}\n".encode(),
            )
        if output is None:
            output = urlsplit(url).path.rsplit("/", 1)[-1] or "index.html"
        if output in ("-", "/dev/stdout"):
            if not quiet:
                err += b"writing to stdout\n"
            out += resp.body
            if not quiet:
                err += b"written to stdout\n"
            return 0, bytes(out), bytes(err)
        try:
            ctx.fs.write(output, resp.body)
        except FSError as e:
            return 1, bytes(out), bytes(err) + f"wget: can't open '{output}': {e}\n".encode()
        if not quiet:
            err += f"saving to '{output}'\n'{output}' saved\n".encode()
        return 0, bytes(out), bytes(err)

    return wget


def _wget_error(err: NetError, req: HttpRequest) -> str:
    if err.kind == "dns":
        return f"wget: bad address '{req.host}'\n"
    if err.kind == "refused":
        return f"wget: can't connect to remote host ({req.host}): Connection refused\n"
    if err.kind == "timeout":
        return "wget: download timed out\n"
    return f"wget: {err}\n"
