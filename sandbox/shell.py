"""An async interpreter of a small, strict POSIX-sh subset, run against a simulated node's MemFS.

Privileged ``nsenter … sh -c SCRIPT`` pods and plain ``sh -c`` pods in the sandbox run
their scripts here. The subset is deliberately strict: a command that is neither a
builtin nor supplied by the caller, or any construct outside the subset, stops the
script with ``sh: NAME: not found`` and status 127, so no code path can silently rely
on something the simulator does not model. See ``SUPPORTED`` for the exact subset.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .memfs import FSError, MemFS, normpath

SUPPORTED = """\
Shell subset (strict: anything else stops the script with status 127 and `sh: NAME: not found`)
- Commands separated by newlines, `;`, `&&`, `||`; pipelines `a | b`; `! pipeline`; `# comments`.
- Quoting: '...', "..." (with $VAR, ${VAR}, $(cmd) and \\ escapes inside), backslash escapes,
  backslash-newline continuation.
- Variables: `X=1` alone, `X=1 cmd` (visible to cmd only), `export X=1`, `unset X`; every
  variable is passed to commands (all are treated as exported).
- Expansions: $VAR, ${VAR}, ${VAR:-w} ${VAR-w} ${VAR:=w} ${VAR:+w} ${VAR:?w}, $?, $$ (fixed),
  $0 (sh), $# (0), $(command substitution, nested), ~ at the start of a word. Unquoted
  expansions split on whitespace; unquoted * and ? glob against the filesystem (no match:
  the word stays as written).
- Redirections: > f, >> f, < f, N> f, N>> f, N>&M, here-documents << 'EOF' / << "EOF" (no
  expansion), << EOF (expansion), <<- (leading tabs stripped). /dev/null reads empty and
  swallows writes; /dev/stdout and /dev/stderr are the current streams.
- set -e / -u / -x / -o pipefail (and +e ...); exit [N].
- Builtins: echo (-n -e), printf, cat, cp (-f -p), mv, mkdir (-p -m), rm (-f -r), rmdir, touch,
  tee (-a), test / [ ] (-e -f -d -s -r -w -x -L -n -z = != -eq -ne -gt -lt -ge -le ! -a -o),
  true, false, :, base64 (-d -w), hostname, date (-u, -I[seconds], -R, +FORMAT incl %s %N %z %Z),
  stat (-c %Y %s %a %A %n %y %F %U %G), sleep, chmod (octal or u+x style), sha256sum,
  grep (-q -i -v -F -E -c -n -x -w -s -l -a -e), ls (-1 -a -l -d), umask [OCTAL] (modes of files
  that redirections create), sed (see below).
- Local time: date (without -u), stat %y and ls -l print the zone named by $TZ, else by the node's
  /etc/timezone (the stand-in for /etc/localtime), else UTC. Files the caller supplies
  (ShellContext.proc, e.g. /proc/uptime) are read by cat, fresh on every read.
- sed: options -n and -E (or -r), one command, files or stdin, bytes as in LC_ALL=C. The command is
  `[ADDR[,ADDR]]p` or `[ADDR[,ADDR]]s/RE/REPL/[gp]`, ADDR a line number or `$`; RE a basic (or with -E
  extended) regular expression with bracket expressions incl. [:class:], anchors, groups,
  alternation, intervals and \\1..\\9; REPL with \\1..\\9, & and \\& \\\\ \\/. A last line without a
  newline is printed without one, as GNU sed does. Alternatives are tried leftmost-first (like GNU's
  leftmost-longest whenever the pattern is anchored at both ends or the alternatives are prefix-free).
  Anything else (other commands, several commands, -i, -e, regex addresses, other delimiters,
  backslash-letter escapes) → `sed: unsupported: …` and status 1.
- Other commands come from the caller (ShellContext.commands: systemctl, curl, k3s, ...) and
  take precedence over the builtins above (not over exit/set/export/unset); a command named
  by path (/usr/bin/curl) is looked up by its base name. `sh: NAME: not found` goes to the
  script's stderr even when the command's stderr was redirected.
- Not supported (status 127): if/then/else/fi, for/while/until/do/done, case/esac,
  function definitions, ( subshells ), { groups }, `backticks`, & background, $((arithmetic)),
  <(process substitution), <<<, <>, >|, &>, ${VAR%...}-style operators, cd and any other command.
"""

PID = 4242  # what $$ expands to: any fixed number will do


@dataclass
class ShellResult:
    rc: int
    stdout: str
    stderr: str


CommandFn = Callable[[list[str], bytes, "ShellContext"], Awaitable[tuple[int, bytes, bytes]]]


@dataclass
class ShellContext:
    fs: MemFS
    hostname: str
    env: dict[str, str]
    clock: Callable[[], float] = time.time
    commands: dict[str, CommandFn] = field(default_factory=dict)
    proc: dict[str, Callable[[], bytes]] = field(default_factory=dict)  # live files such as /proc/uptime


async def run_script(script: str, ctx: ShellContext) -> ShellResult:
    """Run ``script`` as ``sh -c`` would, collecting its stdout and stderr."""
    program = _Parser(script).program()
    err = bytearray()
    sh = _Shell(ctx, dict(ctx.env), _Opts(), err)
    try:
        await sh.run(program)
        rc = sh.rc
    except _Exit as e:
        rc = e.rc
    except _Abort as e:
        err += (e.message + "\n").encode()
        rc = e.rc
    return ShellResult(rc, sh.out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace"))


# --------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(slots=True)
class _Part:
    """A piece of a word: literal text, ``$NAME``, ``$(…)`` or ``${NAME op word}``."""

    kind: str  # lit | var | cmd | param
    text: str  # literal text or parameter name
    quoted: bool
    body: object = None  # cmd: parsed program; param: (op, word)


_Word = list[_Part]


@dataclass(slots=True)
class _Redir:
    fd: int
    op: str  # > >> < >& << <<-
    target: object  # _Word, or an int for >&
    heredoc: _Word | None = None


@dataclass(slots=True)
class _Simple:
    assigns: list[tuple[str, _Word]]
    words: list[_Word]
    redirs: list[_Redir]


@dataclass(slots=True)
class _Pipeline:
    negate: bool
    cmds: list[_Simple]


@dataclass(slots=True)
class _Stop:
    """Where parsing gave up: an unsupported construct (127) or a syntax error (2)."""

    rc: int
    message: str


_AndOr = list[tuple[str, _Pipeline]]  # ("", p1), ("&&", p2), ("||", p3)


class _Unsupported(Exception):
    pass


class _SyntaxError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Parser: a hand-written lexer and recursive descent over the script text

_OPS = ("&&", "||", ";;", "|&", "&>", ";", "|", "&", "(", ")")
_UNSUPPORTED_OPS = {";;", "|&", "&>", "&", "("}
_REDIR = re.compile(r"(\d*)(<<<|<<-|<<|<>|<&|<\(|<|>>|>&|>\||>\(|>)")
_UNSUPPORTED_REDIRS = {"<<<", "<>", "<&", "<(", ">|", ">("}
_KEYWORDS = frozenset(
    ["if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for", "in"]
    + ["function", "select", "{", "}", "[[", "]]"]
)
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_END = frozenset(" \t\n;&|<>()")


class _Parser:
    def __init__(self, src: str):
        self.s = src
        self.i = 0
        self.peeked: tuple | None = None
        self.heredocs: list[tuple[_Redir, str, bool, bool]] = []

    def program(self) -> list:
        """Parse the whole script; an unsupported construct or syntax error ends it with a _Stop."""
        items: list = []
        try:
            while True:
                self._skip_newlines()
                if self._peek()[0] == "eof":
                    break
                # like sh, a line that does not parse does not run at all
                item = self._and_or()
                self._end_of_command()
                items.append(item)
        except _Unsupported as e:
            items.append(_Stop(127, f"sh: {e}: not found"))
        except _SyntaxError as e:
            items.append(_Stop(2, f"sh: syntax error: {e}"))
        return items

    # -- grammar -------------------------------------------------------------------------
    def _list(self, closer: str) -> list:
        """The body of ``$( … )`` up to (and including) ``closer``."""
        items: list = []
        while True:
            self._skip_newlines()
            tok = self._peek()
            if tok == ("op", closer):
                self._take()
                return items
            if tok[0] == "eof":
                raise _SyntaxError("unterminated $(")
            items.append(self._and_or())
            if self._peek() != ("op", closer):
                self._end_of_command()

    def _end_of_command(self) -> None:
        tok = self._take()
        if tok[0] in ("nl", "eof") or tok == ("op", ";"):
            return
        raise _SyntaxError(f"unexpected {_describe(tok)}")

    def _and_or(self) -> _AndOr:
        items = [("", self._pipeline())]
        while self._peek() in (("op", "&&"), ("op", "||")):
            op = self._take()[1]
            self._skip_newlines()
            items.append((op, self._pipeline()))
        return items

    def _pipeline(self) -> _Pipeline:
        negate = False
        tok = self._peek()
        if tok[0] == "w" and _plain(tok[1]) == "!":
            self._take()
            negate = True
        cmds = [self._command()]
        while self._peek() == ("op", "|"):
            self._take()
            self._skip_newlines()
            cmds.append(self._command())
        return _Pipeline(negate, cmds)

    def _command(self) -> _Simple:
        cmd = _Simple([], [], [])
        while True:
            tok = self._peek()
            if tok[0] == "w":
                word = tok[1]
                if not cmd.words:
                    if (assign := _assignment(word)) is not None:
                        self._take()
                        cmd.assigns.append(assign)
                        continue
                    if _plain(word) in _KEYWORDS:
                        raise _Unsupported(_plain(word))
                self._take()
                cmd.words.append(word)
            elif tok[0] == "r":
                self._take()
                self._redirect(tok[1], tok[2], cmd.redirs)
            elif tok[0] == "op" and tok[1] in _UNSUPPORTED_OPS:
                raise _Unsupported(tok[1])
            else:
                break
        if not (cmd.assigns or cmd.words or cmd.redirs):
            raise _SyntaxError(f"unexpected {_describe(self._peek())}")
        return cmd

    def _redirect(self, fd: int | None, op: str, redirs: list[_Redir]) -> None:
        if op in _UNSUPPORTED_REDIRS:
            raise _Unsupported(op)
        tok = self._take()
        if tok[0] != "w":
            raise _SyntaxError(f"unexpected {_describe(tok)}")
        word = tok[1]
        if fd is None:
            fd = 0 if op.startswith("<") else 1
        if op == ">&":
            target = _plain(word)
            if target not in ("0", "1", "2"):
                raise _Unsupported(f">&{target}")
            redirs.append(_Redir(fd, op, int(target)))
        elif op in ("<<", "<<-"):
            if any(p.kind != "lit" for p in word):
                raise _SyntaxError("here-document delimiter must be a plain word")
            delim = "".join(p.text for p in word)
            redir = _Redir(fd, op, None)
            self.heredocs.append((redir, delim, op == "<<-", not any(p.quoted for p in word)))
            redirs.append(redir)
        else:
            redirs.append(_Redir(fd, op, word))

    # -- lexer ---------------------------------------------------------------------------
    def _peek(self) -> tuple:
        if self.peeked is None:
            self.peeked = self._lex()
        return self.peeked

    def _take(self) -> tuple:
        tok = self._peek()
        self.peeked = None
        return tok

    def _skip_newlines(self) -> None:
        while self._peek()[0] == "nl":
            self._take()

    def _lex(self) -> tuple:
        s = self.s
        while self.i < len(s):  # blanks, line continuations and comments
            c = s[self.i]
            if c in " \t":
                self.i += 1
            elif s.startswith("\\\n", self.i):
                self.i += 2
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                break
        if self.i >= len(s):
            return ("eof",)
        if s[self.i] == "\n":
            self.i += 1
            self._read_heredocs()
            return ("nl",)
        for op in _OPS:
            if s.startswith(op, self.i):
                self.i += len(op)
                return ("op", op)
        if m := _REDIR.match(s, self.i):
            self.i = m.end()
            return ("r", int(m.group(1)) if m.group(1) else None, m.group(2))
        if s[self.i] == "`":
            raise _Unsupported("`")
        return ("w", self._word(_WORD_END))

    def _word(self, stop: frozenset[str] | str) -> _Word:
        s, parts = self.s, []
        while self.i < len(s) and s[self.i] not in stop:
            c = s[self.i]
            if c == "\\":
                nxt = s[self.i + 1 : self.i + 2]
                if nxt != "\n":  # an escaped newline just joins lines
                    _lit(parts, nxt or "\\", quoted=bool(nxt))
                self.i += 2
            elif c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise _SyntaxError("unterminated quoted string")
                parts.append(_Part("lit", s[self.i + 1 : end], True))
                self.i = end + 1
            elif c == '"':
                self.i += 1
                self._dquote(parts)
            elif c == "`":
                raise _Unsupported("`")
            elif c == "$":
                self._dollar(parts, quoted=False)
            else:
                _lit(parts, c, quoted=False)
                self.i += 1
        return parts

    def _dquote(self, parts: list[_Part]) -> None:
        s = self.s
        parts.append(_Part("lit", "", True))  # "" is still a (quoted, empty) word
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and s[self.i + 1 : self.i + 2] in ('"', "$", "\\", "`", "\n"):
                if s[self.i + 1] != "\n":
                    _lit(parts, s[self.i + 1], quoted=True)
                self.i += 2
            elif c == "$":
                self._dollar(parts, quoted=True)
            elif c == "`":
                raise _Unsupported("`")
            else:
                _lit(parts, c, quoted=True)
                self.i += 1
        raise _SyntaxError("unterminated quoted string")

    def heredoc_body(self) -> _Word:
        """The whole source as an expanding here-document body (only \\$ \\` \\\\ \\newline escape)."""
        s, parts = self.s, [_Part("lit", "", True)]
        while self.i < len(s):
            c = s[self.i]
            if c == "\\" and s[self.i + 1 : self.i + 2] in ("$", "\\", "`", "\n"):
                if s[self.i + 1] != "\n":
                    _lit(parts, s[self.i + 1], quoted=True)
                self.i += 2
            elif c == "$":
                self._dollar(parts, quoted=True)
            elif c == "`":
                raise _Unsupported("`")
            else:
                _lit(parts, c, quoted=True)
                self.i += 1
        return parts

    def _dollar(self, parts: list[_Part], quoted: bool) -> None:
        s, i = self.s, self.i
        nxt = s[i + 1 : i + 2]
        if s.startswith("$((", i):
            raise _Unsupported("$((")
        if nxt == "(":
            self.i += 2
            self.peeked = None
            parts.append(_Part("cmd", "", quoted, self._list(")")))
        elif nxt == "{":
            self._brace(parts, quoted)
        elif m := _NAME.match(s, i + 1):
            parts.append(_Part("var", m.group(), quoted))
            self.i = m.end()
        elif nxt and nxt in "?$#!@*-0123456789":
            parts.append(_Part("var", nxt, quoted))
            self.i += 2
        else:
            _lit(parts, "$", quoted)
            self.i += 1

    def _brace(self, parts: list[_Part], quoted: bool) -> None:
        s = self.s
        m = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[?$#!@*0-9-])(:?[-=+?])?").match(s, self.i)
        end = s.find("}", self.i)
        if m is None or (m.group(2) is None and s[m.end() : m.end() + 1] != "}"):
            raise _Unsupported(s[self.i : end + 1] if end >= 0 else s[self.i :])
        name, op = m.group(1), m.group(2)
        self.i = m.end()
        word = self._word("}") if op else []
        if not s.startswith("}", self.i):
            raise _SyntaxError("missing '}'")
        self.i += 1
        parts.append(_Part("param", name, quoted, (op or "", word)))

    def _read_heredocs(self) -> None:
        """Read the bodies of here-documents whose ``<<`` was on the line just ended."""
        s = self.s
        for redir, delim, strip_tabs, expand in self.heredocs:
            lines = []
            while self.i < len(s):
                end = s.find("\n", self.i)
                line = s[self.i : end if end >= 0 else len(s)]
                self.i = end + 1 if end >= 0 else len(s)
                if strip_tabs:
                    line = line.lstrip("\t")
                if line == delim:
                    break
                lines.append(line + "\n")
            body = "".join(lines)
            redir.heredoc = _Parser(body).heredoc_body() if expand else [_Part("lit", body, True)]
        self.heredocs = []


def _lit(parts: list[_Part], text: str, quoted: bool) -> None:
    if parts and parts[-1].kind == "lit" and parts[-1].quoted == quoted:
        parts[-1].text += text
    else:
        parts.append(_Part("lit", text, quoted))


def _plain(word: _Word) -> str | None:
    """The text of a word made of one unquoted literal (how keywords must look), else None."""
    if len(word) == 1 and word[0].kind == "lit" and not word[0].quoted:
        return word[0].text
    return None


def _assignment(word: _Word) -> tuple[str, _Word] | None:
    first = word[0] if word else None
    if first is None or first.kind != "lit" or first.quoted or not (m := _ASSIGN.match(first.text)):
        return None
    rest = first.text[m.end() :]
    return m.group(1), ([_Part("lit", rest, False)] if rest else []) + word[1:]


def _describe(tok: tuple) -> str:
    if tok[0] in ("nl", "eof"):
        return "newline" if tok[0] == "nl" else "end of file"
    return f'"{tok[1] if tok[0] == "op" else tok[2]}"' if tok[0] != "w" else "word"


# --------------------------------------------------------------------------------------------
# Execution


class _Exit(Exception):
    def __init__(self, rc: int):
        self.rc = rc


class _Abort(Exception):
    """Stop the whole script, command substitutions included."""

    def __init__(self, rc: int, message: str):
        self.rc, self.message = rc, message


@dataclass
class _Opts:
    errexit: bool = False
    nounset: bool = False
    xtrace: bool = False
    pipefail: bool = False


_SET_LETTERS = {"e": "errexit", "u": "nounset", "x": "xtrace"}
_SET_NAMES = {"errexit", "nounset", "xtrace", "pipefail"}


class _Shell:
    def __init__(self, ctx: ShellContext, variables: dict[str, str], opts: _Opts, err: bytearray):
        self.ctx, self.vars, self.opts, self.err = ctx, variables, opts, err
        self.out = bytearray()
        self.rc = 0
        self.subst_rc: int | None = None
        self.umask = 0o022  # files created by redirections get 0666 & ~umask, as in a real shell

    async def run(self, program: list) -> None:
        for item in program:
            if isinstance(item, _Stop):
                raise _Abort(item.rc, item.message)
            rc, final = await self._and_or(item)
            self.rc = rc
            # set -e ignores failures of commands that are not the last of an && / || list
            if self.opts.errexit and rc != 0 and final:
                raise _Exit(rc)

    async def _and_or(self, items: _AndOr) -> tuple[int, bool]:
        rc, final = 0, False
        for k, (op, pipe) in enumerate(items):
            if (op == "&&" and rc != 0) or (op == "||" and rc == 0):
                continue
            rc = self.rc = await self._pipeline(pipe)
            final = k == len(items) - 1 and not pipe.negate
        return rc, final

    async def _pipeline(self, pipe: _Pipeline) -> int:
        data, rcs = b"", []
        for k, cmd in enumerate(pipe.cmds):
            piped = k < len(pipe.cmds) - 1
            sink = bytearray() if piped else self.out
            rcs.append(await self._simple(cmd, data, sink))
            data = bytes(sink) if piped else b""
        rc = next((r for r in reversed(rcs) if r), 0) if self.opts.pipefail else rcs[-1]
        return (0 if rc else 1) if pipe.negate else rc

    async def _simple(self, cmd: _Simple, stdin: bytes, sink: bytearray) -> int:
        self.subst_rc = None
        argv: list[str] = []
        for word in cmd.words:
            argv += await self._fields(word)
        values = [(name, await self._string(word)) for name, word in cmd.assigns]
        fds: dict[int, tuple] = {0: ("data", stdin), 1: ("buf", sink), 2: ("buf", self.err)}
        if (msg := await self._redirect(cmd.redirs, fds)) is not None:
            self.err.extend(f"sh: {msg}\n".encode())
            return 1
        if not argv:
            self.vars.update(values)
            return self.subst_rc or 0
        if self.opts.xtrace:
            self.err.extend(("+ " + " ".join(argv) + "\n").encode())
        name = argv[0]
        if name in _SPECIAL:
            self.vars.update(values)
            rc, out, err = _SPECIAL[name](self, argv)
        else:
            fn = self.ctx.commands.get(name) or _BUILTINS.get(name)
            base = name.rsplit("/", 1)[-1]
            if fn is None and "/" in name:
                fn = self.ctx.commands.get(base) or _BUILTINS.get(base)
                argv = [base, *argv[1:]]
            if fn is None:
                raise _Abort(127, f"sh: {name}: not found")
            ctx = dataclasses.replace(self.ctx, env={**self.vars, **dict(values)})
            src = fds[0]
            rc, out, err = await fn(argv, src[1] if src[0] == "data" else b"", ctx)
        self._emit(fds[1], out)
        self._emit(fds[2], err)
        return rc

    def _emit(self, target: tuple, data: bytes) -> None:
        if not data:
            return
        if target[0] == "buf":
            target[1].extend(data)
        elif target[0] == "file":
            try:
                self.ctx.fs.write(target[1], data, append=True)
            except FSError:
                pass  # the file vanished between open and write; a real shell would keep the fd

    async def _redirect(self, redirs: list[_Redir], fds: dict[int, tuple]) -> str | None:
        """Apply redirections in order; return an error message when one fails."""
        fs = self.ctx.fs
        for r in redirs:
            if r.op == ">&":
                if r.target not in fds:
                    return f"{r.target}: Bad file descriptor"
                fds[r.fd] = fds[r.target]
                continue
            if r.op in ("<<", "<<-"):
                fds[r.fd] = ("data", (await self._string(r.heredoc or [])).encode())
                continue
            path = await self._string(r.target)
            if r.op == "<":
                if path in ("/dev/stdin", "/dev/fd/0"):
                    continue
                try:
                    fds[r.fd] = ("data", fs.read(path))
                except FSError as e:
                    return f"can't open {path}: {'no such file' if e.args[0].startswith('No such') else e}"
            elif path in ("/dev/stdout", "/dev/stderr"):
                fds[r.fd] = fds[1 if path == "/dev/stdout" else 2]
            elif normpath(path) == "/dev/null":
                fds[r.fd] = ("null",)
            else:
                try:
                    new = not fs.isfile(path)
                    fs.write(path, b"", append=r.op == ">>", mode=(0o666 & ~self.umask) if new else None)
                except FSError as e:
                    return f"can't create {path}: {'nonexistent directory' if e.args[0].startswith('No such') else e}"
                fds[r.fd] = ("file", path)
        return None

    # -- expansion -----------------------------------------------------------------------
    async def _segments(self, word: _Word) -> list[tuple[str, bool, bool]]:
        """(text, quoted, expanded) pieces; unquoted expansions are split and globbed by _fields."""
        segs = []
        for k, p in enumerate(word):
            if p.kind != "lit":
                segs.append((await self._value(p), p.quoted, True))
            elif k == 0 and not p.quoted and (p.text == "~" or p.text.startswith("~/")):
                segs += [(self.vars.get("HOME", "/root"), True, False), (p.text[1:], False, False)]
            else:
                segs.append((p.text, p.quoted, False))
        return segs

    async def _string(self, word: _Word) -> str:
        return "".join(seg[0] for seg in await self._segments(word))

    async def _fields(self, word: _Word) -> list[str]:
        """Expand a word into argv fields: split unquoted expansions on blanks, then glob."""
        fields: list[list[tuple[str, bool]]] = []
        cur: list[tuple[str, bool]] = []  # (text, may glob)
        started = False
        for text, quoted, expanded in await self._segments(word):
            if quoted or not expanded:
                cur.append((text, not quoted))
                started = True
                continue
            for piece in re.split(r"([ \t\n]+)", text):
                if not piece:
                    continue
                if piece.isspace():
                    if started:
                        fields.append(cur)
                    cur, started = [], False
                else:
                    cur.append((piece, True))
                    started = True
        if started:
            fields.append(cur)
        out: list[str] = []
        for f in fields:
            out += self._glob(f) or ["".join(t for t, _ in f)]
        return out

    def _glob(self, pieces: list[tuple[str, bool]]) -> list[str]:
        if not any(g and ("*" in t or "?" in t) for t, g in pieces):
            return []
        rx, prev = "", "/"
        for text, globbing in pieces:
            for ch in text:
                if globbing and ch in "*?":
                    # as in sh, a wildcard never matches a leading dot or crosses a slash
                    rx += ("(?!\\.)" if prev == "/" else "") + ("[^/]*" if ch == "*" else "[^/]")
                else:
                    rx += re.escape(ch)
                prev = ch
        absolute = rx.startswith("/")
        pattern = re.compile(rx if absolute else "/" + rx)
        hits = [p for p in self.ctx.fs.paths() if pattern.fullmatch(p)]
        return sorted(h if absolute else h[1:] for h in hits)

    async def _value(self, p: _Part) -> str:
        if p.kind == "var":
            return self._var(p.text)
        if p.kind == "cmd":
            return await self._subst(p.body)
        op, word = p.body
        if not op:
            return self._var(p.text)
        val = self._var(p.text, strict=False) if not _NAME.fullmatch(p.text) else self.vars.get(p.text)
        missing = val is None or (op.startswith(":") and val == "")
        kind = op[-1]
        if kind == "-":
            return await self._string(word) if missing else val
        if kind == "=":
            if missing:
                val = self.vars[p.text] = await self._string(word)
            return val
        if kind == "+":
            return "" if missing else await self._string(word)
        if missing:  # "?"
            raise _Abort(2, f"sh: {p.text}: {await self._string(word) or 'parameter not set'}")
        return val

    def _var(self, name: str, strict: bool = True) -> str | None:
        special = {"?": str(self.rc), "$": str(PID), "#": "0", "0": "sh", "@": "", "*": "", "!": ""}
        if name in special:
            return special[name]
        if name == "-":
            return "".join(k for k, v in _SET_LETTERS.items() if getattr(self.opts, v))
        val = self.vars.get(name)
        if val is None:
            if self.opts.nounset and strict:
                raise _Abort(2, f"sh: {name}: parameter not set")
            return "" if strict else None
        return val

    async def _subst(self, program: list) -> str:
        child = _Shell(self.ctx, dict(self.vars), dataclasses.replace(self.opts), self.err)
        child.umask = self.umask
        child.rc = self.rc
        try:
            await child.run(program)
        except _Exit as e:  # exit inside $( ) leaves only the subshell
            child.rc = e.rc
        self.subst_rc = child.rc
        return child.out.decode("utf-8", errors="replace").rstrip("\n")

    # -- special builtins (they change the shell itself) --------------------------------
    def _exit(self, argv: list[str]) -> tuple[int, bytes, bytes]:
        if len(argv) > 1 and not argv[1].isdigit():
            raise _Abort(2, f"sh: exit: Illegal number: {argv[1]}")
        raise _Exit(int(argv[1]) % 256 if len(argv) > 1 else self.rc)

    def _set(self, argv: list[str]) -> tuple[int, bytes, bytes]:
        if len(argv) == 1:
            listing = "".join(f"{k}='{v}'\n" for k, v in sorted(self.vars.items()))
            return 0, listing.encode(), b""
        args = argv[1:]
        while args:
            arg = args.pop(0)
            if arg == "--":
                break
            on = arg[0] == "-"
            if arg[0] not in "-+" or len(arg) < 2:
                return 2, b"", f"sh: set: illegal option {arg}\n".encode()
            if arg[1:] == "o":
                opt = args.pop(0) if args else ""
                if opt not in _SET_NAMES:
                    return 2, b"", f"sh: set: illegal option -o {opt}\n".encode()
                setattr(self.opts, opt, on)
                continue
            for letter in arg[1:]:
                if letter not in _SET_LETTERS:
                    return 2, b"", f"sh: set: illegal option {arg[0]}{letter}\n".encode()
                setattr(self.opts, _SET_LETTERS[letter], on)
        return 0, b"", b""

    def _umask(self, argv: list[str]) -> tuple[int, bytes, bytes]:
        if len(argv) == 1:
            return 0, f"{self.umask:04o}\n".encode(), b""
        if len(argv) != 2 or not re.fullmatch(r"[0-7]{1,4}", argv[1]):
            return 1, b"", f"sh: umask: invalid mode '{' '.join(argv[1:])}'\n".encode()
        self.umask = int(argv[1], 8)
        return 0, b"", b""

    def _export(self, argv: list[str]) -> tuple[int, bytes, bytes]:
        for arg in argv[1:]:
            if arg == "-p":
                continue
            name, eq, value = arg.partition("=")
            if not _NAME.fullmatch(name):
                return 1, b"", f"sh: {argv[0]}: {arg}: bad variable name\n".encode()
            if eq:
                self.vars[name] = value
            elif argv[0] == "unset":
                self.vars.pop(name, None)
        return 0, b"", b""


_SPECIAL: dict[str, Callable[[_Shell, list[str]], tuple[int, bytes, bytes]]] = {
    "exit": _Shell._exit,
    "set": _Shell._set,
    "export": _Shell._export,
    "unset": _Shell._export,
    "umask": _Shell._umask,
}


# --------------------------------------------------------------------------------------------
# Builtin commands: CommandFn-shaped, working against ctx.fs

_Out = tuple[int, bytes, bytes]


class _Usage(Exception):
    pass


def _getopt(argv: list[str], flags: str, with_arg: str = "") -> tuple[set[str], dict[str, str], list[str]]:
    """Short options anywhere before ``--`` (GNU style); raises _Usage for an unknown one."""
    seen: set[str] = set()
    values: dict[str, str] = {}
    operands: list[str] = []
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "--":
            operands += args
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        for k, letter in enumerate(arg[1:], start=1):
            if letter in with_arg:
                rest = arg[k + 1 :]
                if not rest and not args:
                    raise _Usage(f"option requires an argument -- '{letter}'")
                values[letter] = rest or args.pop(0)
                break
            if letter not in flags:
                raise _Usage(f"invalid option -- '{letter}'")
            seen.add(letter)
    return seen, values, operands


def _builtin(fn: Callable[[list[str], bytes, ShellContext], _Out]) -> CommandFn:
    """Wrap a synchronous builtin; usage errors become ``cmd: message`` with status 1."""

    async def run(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
        try:
            return fn(argv, stdin, ctx)
        except _Usage as e:
            return 1, b"", f"{argv[0]}: {e}\n".encode()

    run.__name__ = fn.__name__
    return run


def _msg(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "r": "\r",
    "v": "\v",
    "e": "\x1b",
}


def _unescape(text: str, echo_style: bool = True) -> tuple[str, bool]:
    """Interpret echo -e / printf backslash escapes; the flag says whether \\c cut the output."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "c":
            return "".join(out), True
        elif nxt == "x" and (m := re.match(r"[0-9a-fA-F]{1,2}", text[i + 2 :])):
            out.append(chr(int(m.group(), 16)))
            i += 2 + m.end()
        elif nxt == "0" and echo_style:  # echo -e: \0NNN
            m = re.match(r"[0-7]{0,3}", text[i + 2 :])
            out.append(chr(int(m.group() or "0", 8)))
            i += 2 + m.end()
        elif nxt in "01234567" and not echo_style:  # printf: \NNN
            m = re.match(r"[0-7]{1,3}", text[i + 1 :])
            out.append(chr(int(m.group(), 8)))
            i += 1 + m.end()
        else:
            out.append("\\" + nxt)
            i += 2
    return "".join(out), False


@_builtin
def _echo(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    args, newline, escapes = argv[1:], True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        flags = args.pop(0)
        newline = newline and "n" not in flags
        escapes = "e" in flags if ("e" in flags or "E" in flags) else escapes
    text = " ".join(args)
    if escapes:
        text, cut = _unescape(text)
        newline = newline and not cut
    return 0, (text + ("\n" if newline else "")).encode(), b""


_CONV = re.compile(r"%([-+ #0]*)(\d+|\*)?(?:\.(\d*|\*))?([sdiouxXcfeEgGb%])")


@_builtin
def _printf(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    if len(argv) < 2:
        raise _Usage("missing format")
    fmt, args, out, err, rc = argv[1], list(argv[2:]), [], [], 0

    def number(arg: str, conv: str) -> int | float:
        nonlocal rc
        try:
            if arg.startswith(("'", '"')):
                return ord(arg[1]) if len(arg) > 1 else 0
            if conv in "feEgG":
                return float(arg or 0)
            return int(arg or "0", 0) if not re.fullmatch(r"[+-]?0\d+", arg) else int(arg, 8)
        except ValueError:
            err.append(f"printf: invalid number '{arg}'")
            rc = 1
            return 0

    while True:
        used, pos = 0, 0
        for m in _CONV.finditer(fmt):
            out.append(_unescape(fmt[pos : m.start()], echo_style=False)[0])
            pos = m.end()
            flags, width, prec, conv = m.groups()
            if conv == "%":
                out.append("%")
                continue
            if width == "*":
                width, used = str(number(args.pop(0) if args else "0", "d")), used + 1
            if prec == "*":
                prec, used = str(number(args.pop(0) if args else "0", "d")), used + 1
            arg = args.pop(0) if args else ""
            used += 1
            spec = "%" + flags + (width or "") + ("." + prec if prec is not None else "")
            if conv == "b":
                out.append((spec + "s") % _unescape(arg)[0])
            elif conv == "c":
                out.append((spec + "s") % arg[:1])
            elif conv == "s":
                out.append((spec + "s") % arg)
            else:
                out.append((spec + ("d" if conv in "iu" else conv)) % number(arg, conv))
        out.append(_unescape(fmt[pos:], echo_style=False)[0])
        if not args or not used:
            break
    return rc, "".join(out).encode(), _msg(err)


@_builtin
def _cat(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    _, _, files = _getopt(argv, "u")
    out, err = bytearray(), []
    for path in files or ["-"]:
        if path in ("-", "/dev/stdin"):
            out += stdin
            continue
        if normpath(path) in ctx.proc:
            out += ctx.proc[normpath(path)]()
            continue
        try:
            out += ctx.fs.read(path)
        except FSError as e:
            if ctx.fs.isdir(path):
                err.append("cat: read error: Is a directory")
            else:
                err.append(f"cat: can't open '{path}': {e}")
    return (1 if err else 0), bytes(out), _msg(err)


@_builtin
def _cp(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, _, ops = _getopt(argv, "fp")
    return _copy_or_move(argv[0], ops, ctx, preserve="p" in flags)


@_builtin
def _mv(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    _, _, ops = _getopt(argv, "f")
    return _copy_or_move(argv[0], ops, ctx)


def _copy_or_move(cmd: str, ops: list[str], ctx: ShellContext, preserve: bool = False) -> _Out:
    fs, err = ctx.fs, []
    if len(ops) < 2:
        raise _Usage(f"missing {'file' if not ops else 'destination file'} operand")
    *sources, dest = ops
    if len(sources) > 1 and not fs.isdir(dest):
        return 1, b"", _msg([f"{cmd}: '{dest}' is not a directory"])
    for src in sources:
        try:
            if cmd == "mv":
                if not fs.exists(src):
                    err.append(f"mv: can't rename '{src}': No such file or directory")
                    continue
                fs.rename(src, dest)
                continue
            if not fs.exists(src):
                err.append(f"cp: can't stat '{src}': No such file or directory")
            elif fs.isdir(src):
                err.append(f"cp: omitting directory '{src}'")
            else:
                fs.copy(src, dest, preserve=preserve)
        except FSError as e:
            target = dest.rstrip("/") + "/" + src.rsplit("/", 1)[-1] if fs.isdir(dest) else dest
            if str(e) == "are the same file":
                err.append(f"{cmd}: '{src}' and '{target}' are the same file")
            elif cmd == "mv":
                err.append(f"mv: can't rename '{src}': {e}")
            else:
                err.append(f"cp: can't create '{target}': {e}")
    return (1 if err else 0), b"", _msg(err)


@_builtin
def _mkdir(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, values, dirs = _getopt(argv, "p", "m")
    if not dirs:
        raise _Usage("missing operand")
    err = []
    for d in dirs:
        try:
            ctx.fs.mkdir(d, parents="p" in flags)
            if "m" in values:
                ctx.fs.chmod(d, int(values["m"], 8))
        except FSError as e:
            err.append(f"mkdir: can't create directory '{d}': {e}")
    return (1 if err else 0), b"", _msg(err)


@_builtin
def _rm(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, _, paths = _getopt(argv, "frRi")
    force, recursive, err = "f" in flags, bool({"r", "R"} & flags), []
    if not paths and not force:
        raise _Usage("missing operand")
    for p in paths:
        if not ctx.fs.exists(p):
            if not force:
                err.append(f"rm: can't remove '{p}': No such file or directory")
        elif ctx.fs.isdir(p) and not recursive:
            err.append(f"rm: '{p}' is a directory")
        else:
            try:
                ctx.fs.remove(p, recursive=recursive)
            except FSError as e:
                err.append(f"rm: can't remove '{p}': {e}")
    return (1 if err else 0), b"", _msg(err)


@_builtin
def _rmdir(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    _, _, paths = _getopt(argv, "")
    err = []
    for p in paths:
        try:
            ctx.fs.rmdir(p)
        except FSError as e:
            err.append(f"rmdir: '{p}': {e}")
    return (1 if err else 0), b"", _msg(err)


@_builtin
def _touch(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    _, _, paths = _getopt(argv, "c")
    err = []
    for p in paths:
        try:
            ctx.fs.touch(p)
        except FSError as e:
            err.append(f"touch: {p}: {e}")
    return (1 if err else 0), b"", _msg(err)


@_builtin
def _tee(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, _, paths = _getopt(argv, "a")
    err = []
    for p in paths:
        try:
            ctx.fs.write(p, stdin, append="a" in flags)
        except FSError as e:
            err.append(f"tee: {p}: {e}")
    return (1 if err else 0), stdin, _msg(err)


async def _true(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    return 0, b"", b""


async def _false(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    return 1, b"", b""


# -- test / [ ---------------------------------------------------------------------------------

_BINARY = {"=", "==", "!=", "-eq", "-ne", "-gt", "-lt", "-ge", "-le"}
_UNARY = {"-e", "-f", "-d", "-s", "-r", "-w", "-x", "-L", "-h", "-n", "-z"}


class _TestError(Exception):
    pass


def _test_eval(args: list[str], ctx: ShellContext) -> bool:
    pos = 0

    def peek(k: int = 0) -> str | None:
        return args[pos + k] if pos + k < len(args) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(args):
            raise _TestError("argument expected")
        pos += 1
        return args[pos - 1]

    def integer(s: str) -> int:
        if not re.fullmatch(r"\s*[+-]?\d+\s*", s):
            raise _TestError(f"invalid number '{s}'")
        return int(s)

    def primary() -> bool:
        if peek(1) in _BINARY and peek(2) is not None:
            left, op, right = take(), take(), take()
            if op in ("=", "=="):
                return left == right
            if op == "!=":
                return left != right
            a, b = integer(left), integer(right)
            return {"-eq": a == b, "-ne": a != b, "-gt": a > b, "-lt": a < b, "-ge": a >= b, "-le": a <= b}[
                op
            ]
        if peek() == "!":
            take()
            return not primary()
        if peek() == "(" and peek(1) is not None:
            take()
            val = disjunction()
            if take() != ")":
                raise _TestError("')' expected")
            return val
        if peek() in _UNARY and peek(1) is not None:
            op, arg = take(), take()
            return _file_test(op, arg, ctx)
        return take() != ""

    def conjunction() -> bool:
        val = primary()
        while peek() == "-a":
            take()
            val = primary() and val
        return val

    def disjunction() -> bool:
        val = conjunction()
        while peek() == "-o":
            take()
            val = conjunction() or val
        return val

    if not args:
        return False
    result = disjunction()
    if pos != len(args):
        raise _TestError(f"{args[pos]}: unknown operand")
    return result


def _file_test(op: str, arg: str, ctx: ShellContext) -> bool:
    fs = ctx.fs
    if op == "-n":
        return arg != ""
    if op == "-z":
        return arg == ""
    if op in ("-L", "-h"):
        return False  # MemFS has no symlinks
    if op == "-f":
        return fs.isfile(arg)
    if op == "-d":
        return fs.isdir(arg)
    if not fs.exists(arg):
        return False
    if op == "-s":
        return fs.isfile(arg) and len(fs.read(arg)) > 0
    if op == "-x":
        return bool(fs.stat(arg).mode & 0o111)
    return True  # -e -r -w: the simulated shell runs as root


@_builtin
def _test(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            return 2, b"", b"[: missing ]\n"
        args = args[:-1]
    try:
        return (0 if _test_eval(args, ctx) else 1), b"", b""
    except _TestError as e:
        return 2, b"", f"sh: {e}\n".encode()


# -- data and file tools ------------------------------------------------------------------


@_builtin
def _base64(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, values, files = _getopt(argv, "di", "w")
    if files and files[0] != "-":
        try:
            data = ctx.fs.read(files[0])
        except FSError as e:
            return 1, b"", _msg([f"base64: can't open '{files[0]}': {e}"])
    else:
        data = stdin
    if "d" in flags:
        try:
            return 0, base64.b64decode(re.sub(rb"\s+", b"", data), validate=True), b""
        except (binascii.Error, ValueError):
            return 1, b"", b"base64: invalid input\n"
    encoded = base64.b64encode(data).decode()
    width = int(values.get("w", "76"))
    if not encoded:
        return 0, b"", b""
    lines = [encoded[i : i + width] for i in range(0, len(encoded), width)] if width else [encoded]
    return 0, _msg(lines), b""


@_builtin
def _hostname(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, _, _ = _getopt(argv, "sf")
    name = ctx.hostname.split(".")[0] if "s" in flags else ctx.hostname
    return 0, (name + "\n").encode(), b""


def _zone(ctx: ShellContext) -> str:
    """The local time zone, as libc finds it: $TZ, else the system's zone (here /etc/timezone), else UTC."""
    name = ctx.env.get("TZ", "").lstrip(":")
    if not name:
        try:
            name = ctx.fs.read("/etc/timezone").decode().strip()
        except (FSError, UnicodeDecodeError):
            name = ""
    return name or "UTC"


def _strftime(fmt: str, when: float, zone: str = "UTC") -> str:
    """strftime in ``zone`` (UTC by default), plus %s (epoch seconds) and %N (nanoseconds) as GNU/busybox
    date has them. An unknown zone is UTC, as glibc treats it."""
    try:
        tz = UTC if zone in ("UTC", "UTC0", "") else ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = UTC
    dt = datetime.fromtimestamp(when, tz)
    nanos = f"{int(round(when % 1 * 1e9)) % 1_000_000_000:09d}"

    def conv(m: re.Match) -> str:
        code = m.group(1)
        if code == "%":
            return "%"
        if code == "s":
            return str(int(when))
        if code == "N":
            return nanos
        if code == "Z":
            return dt.tzname() or "UTC"
        if code == "z":
            return dt.strftime("%z") or "+0000"
        if code == "e":
            return f"{dt.day:2d}"
        return dt.strftime("%" + code)

    return re.sub(r"%([A-Za-z%])", conv, fmt)


@_builtin
def _date(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    fmt, zone, iso = "%a %b %e %H:%M:%S %Z %Y", _zone(ctx), False
    for arg in argv[1:]:
        if arg.startswith("+"):
            fmt = arg[1:]
        elif arg in ("-u", "--utc"):
            zone = "UTC"
        elif arg == "-R":
            fmt = "%a, %d %b %Y %H:%M:%S %z"
        elif arg.startswith("-I"):
            spec = arg[2:].lstrip("=") or "date"
            fmts = {"date": "%Y-%m-%d", "hours": "%Y-%m-%dT%H%z", "minutes": "%Y-%m-%dT%H:%M%z"}
            fmt, iso = fmts.get(spec, "%Y-%m-%dT%H:%M:%S%z"), spec != "date"
        else:
            return 1, b"", f"date: invalid date '{arg}'\n".encode()
    text = _strftime(fmt, ctx.clock(), zone)
    if iso:  # -I writes the offset as +09:00
        text = text[:-2] + ":" + text[-2:]
    return 0, (text + "\n").encode(), b""


def _mode_string(mode: int, is_dir: bool) -> str:
    bits = "".join(ch if mode & (1 << (8 - k)) else "-" for k, ch in enumerate("rwxrwxrwx"))
    return ("d" if is_dir else "-") + bits


@_builtin
def _stat(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    args, fmt, paths = argv[1:], None, []
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--format") and args:
            fmt = args.pop(0)
        elif arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2:
            fmt = arg[2:]
        elif arg in ("-L",):
            continue
        elif arg.startswith("-") and arg != "-":
            raise _Usage(f"invalid option -- '{arg[1:2]}'")
        else:
            paths.append(arg)
    if not paths:
        raise _Usage("missing operand")
    out, err = [], []
    for p in paths:
        try:
            st = ctx.fs.stat(p)
        except FSError as e:
            err.append(f"stat: can't stat '{p}': {e}")
            continue
        is_dir = ctx.fs.isdir(p)
        human = _strftime("%Y-%m-%d %H:%M:%S.%N %z", st.mtime, _zone(ctx))
        kind = "directory" if is_dir else ("regular empty file" if not st.data else "regular file")
        codes = {
            "Y": str(int(st.mtime)),
            "s": str(len(st.data)),
            "a": f"{st.mode:o}",
            "n": p,
            "y": human,
            "F": kind,
            "A": _mode_string(st.mode, is_dir),
            "U": "root",
            "G": "root",
            "u": "0",
            "g": "0",
            "%": "%",
        }
        if fmt is None:
            out.append(
                f"  File: {p}\n  Size: {len(st.data)}\t{kind}\n"
                f"Access: (0{st.mode:o}/{_mode_string(st.mode, is_dir)})  Uid: (    0/    root)   Gid: (    0/    root)\n"
                f"Modify: {human}"
            )
        else:
            out.append(re.sub(r"%(.)", lambda m, codes=codes: codes.get(m.group(1), m.group()), fmt))
    return (1 if err else 0), _msg(out), _msg(err)


@_builtin
def _chmod(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    if len(argv) < 3:
        raise _Usage("missing operand")
    mode_arg, paths, err = argv[1], argv[2:], []
    for p in paths:
        try:
            current = ctx.fs.stat(p).mode
        except FSError as e:
            err.append(f"chmod: {p}: {e}")
            continue
        mode = _parse_mode(mode_arg, current)
        if mode is None:
            return 1, b"", f"chmod: invalid mode '{mode_arg}'\n".encode()
        ctx.fs.chmod(p, mode)
    return (1 if err else 0), b"", _msg(err)


def _parse_mode(spec: str, current: int) -> int | None:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = current
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwx]*)", clause)
        if not m:
            return None
        who = m.group(1) or "a"
        perm = sum({"r": 4, "w": 2, "x": 1}[c] for c in m.group(3))
        mask = 0
        for w in "ugo" if "a" in who else who:
            mask |= perm << {"u": 6, "g": 3, "o": 0}[w]
        full = sum(7 << {"u": 6, "g": 3, "o": 0}[w] for w in ("ugo" if "a" in who else who))
        if m.group(2) == "+":
            mode |= mask
        elif m.group(2) == "-":
            mode &= ~mask
        else:
            mode = (mode & ~full) | mask
    return mode


@_builtin
def _sha256sum(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    _, _, files = _getopt(argv, "b")
    out, err = [], []
    for f in files or ["-"]:
        try:
            data = stdin if f == "-" else ctx.fs.read(f)
        except FSError as e:
            err.append(f"sha256sum: can't open '{f}': {e}")
            continue
        out.append(f"{hashlib.sha256(data).hexdigest()}  {f}")
    return (1 if err else 0), _msg(out), _msg(err)


def _bre_to_python(pattern: str) -> str:
    """Basic regular expressions: \\( \\) \\{ \\} \\| \\+ \\? are operators, the bare characters literals."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "(){}|+?" else c + nxt)
            i += 2
            continue
        out.append("\\" + c if c in "(){}|+?" else c)
        i += 1
    return "".join(out)


@_builtin
def _grep(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    args, patterns, rest, flags = argv[1:], [], [], set()
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest += args
            break
        if arg.startswith("-") and len(arg) > 1:
            for k, letter in enumerate(arg[1:], start=1):
                if letter == "e":
                    patterns.append(arg[k + 1 :] or (args.pop(0) if args else ""))
                    break
                if letter not in "qivFEcnxwslHha":
                    return 2, b"", f"grep: invalid option -- '{letter}'\n".encode()
                flags.add(letter)
        else:
            rest.append(arg)
    if not patterns:
        if not rest:
            return 2, b"", b"grep: no pattern given\n"
        patterns = [rest.pop(0)]
    rx_flags = re.IGNORECASE if "i" in flags else 0
    regexes = []
    for pat in patterns:
        body = re.escape(pat) if "F" in flags else (pat if "E" in flags else _bre_to_python(pat))
        if "w" in flags:
            body = rf"(?<!\w)(?:{body})(?!\w)"
        if "x" in flags:
            body = rf"^(?:{body})$"
        try:
            regexes.append(re.compile(body, rx_flags))
        except re.error:
            return 2, b"", f"grep: bad regex '{pat}'\n".encode()
    files = rest or ["-"]
    out, err, matched, errors = [], [], False, False
    for f in files:
        try:
            data = stdin if f == "-" else ctx.fs.read(f)
        except FSError as e:
            errors = True
            if "s" not in flags:
                err.append(f"grep: {f}: {e}")
            continue
        text = data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        count = 0
        prefix = (
            f"{'(standard input)' if f == '-' else f}:"
            if ("H" in flags or len(files) > 1) and "h" not in flags
            else ""
        )
        for n, line in enumerate(lines, start=1):
            if any(r.search(line) for r in regexes) != ("v" in flags):
                count += 1
                if not ({"q", "c", "l"} & flags):
                    out.append(prefix + (f"{n}:" if "n" in flags else "") + line)
        matched = matched or count > 0
        if "c" in flags:
            out.append(f"{prefix}{count}")
        elif "l" in flags and count:
            out.append("(standard input)" if f == "-" else f)
        if matched and "q" in flags:
            return 0, b"", b""
    rc = 2 if errors and not matched else (0 if matched else 1)
    return rc, b"" if "q" in flags else _msg(out), _msg(err)


class _SedUnsupported(Exception):
    pass


_POSIX_CLASSES = {"alpha": "A-Za-z", "digit": "0-9", "alnum": "A-Za-z0-9", "upper": "A-Z", "lower": "a-z",
                  "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
                  "xdigit": "0-9A-Fa-f"}


def _sed_bracket(pattern: str, i: int) -> tuple[str, int]:
    """A POSIX bracket expression starting at pattern[i] == '[' → (Python class, index after it)."""
    j, out = i + 1, ["["]
    if j < len(pattern) and pattern[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < len(pattern):
        c = pattern[j]
        if c == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if pattern.startswith("[:", j):
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2:end] if end > 0 else ""
            if name not in _POSIX_CLASSES:
                raise _SedUnsupported(f"bracket class [:{name}:]")
            out.append(_POSIX_CLASSES[name])
            j = end + 2
            continue
        if pattern.startswith(("[=", "[."), j):
            raise _SedUnsupported("collating elements in brackets")
        out.append("\\" + c if c in "\\[]^&~|" else c)  # inside POSIX brackets a backslash is literal
        j += 1
    raise _SedUnsupported("unterminated bracket expression")


def _sed_regex(pattern: str, extended: bool) -> re.Pattern:
    """A POSIX BRE/ERE as a Python pattern (the subset SUPPORTED lists)."""
    out, i = [], 0
    special = "(){}|+?" if extended else ""
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            cls, i = _sed_bracket(pattern, i)
            out.append(cls)
            continue
        if c == "\\":
            if i + 1 >= len(pattern):
                raise _SedUnsupported("trailing backslash")
            nxt = pattern[i + 1]
            i += 2
            if nxt.isdigit() and nxt != "0":
                out.append("\\" + nxt)
            elif nxt.isalnum():
                raise _SedUnsupported(f"escape \\{nxt}")
            elif not extended and nxt in "(){}|+?":
                out.append(nxt)  # BRE: \\( \\) \\{ \\} \\| \\+ \\? are the operators
            else:
                out.append(re.escape(nxt))
            continue
        if c in "(){}|+?" and c not in special:
            out.append("\\" + c)  # BRE: the bare characters are literals
        elif c in "*+?}" and out and out[-1] in ("*", "+", "?", "}"):
            raise _SedUnsupported("stacked repetition")
        else:
            out.append(c)
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as e:
        raise _SedUnsupported(f"regular expression: {e}") from None


def _sed_split(text: str, start: int, what: str) -> tuple[str, int]:
    """The text up to the next unescaped '/' (``\\/`` kept as an escaped slash) → (text, index after '/')."""
    out, i = [], start
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i:i + 2])
            i += 2
            continue
        if c == "[" and what == "regex":  # a '/' inside brackets does not end the regex
            j = i + 1
            j += 1 if text[j:j + 1] == "^" else 0
            j += 1 if text[j:j + 1] == "]" else 0
            end = text.find("]", j)
            if end < 0:
                raise _SedUnsupported("unterminated bracket expression")
            out.append(text[i:end + 1])
            i = end + 1
            continue
        if c == "/":
            return "".join(out), i + 1
        if c == "\n":
            break
        out.append(c)
        i += 1
    raise _SedUnsupported(f"unterminated s command ({what})")


def _sed_repl(repl: str) -> list[tuple[str, object]]:
    parts: list[tuple[str, object]] = []
    i = 0
    while i < len(repl):
        c = repl[i]
        if c == "\\":
            nxt = repl[i + 1] if i + 1 < len(repl) else ""
            if nxt.isdigit():
                parts.append(("group", int(nxt)))
            elif nxt in ("&", "\\", "/"):
                parts.append(("lit", nxt))
            else:
                raise _SedUnsupported(f"replacement escape \\{nxt}")
            i += 2
        elif c == "&":
            parts.append(("group", 0))
            i += 1
        else:
            parts.append(("lit", c))
            i += 1
    return parts


def _sed_parse(script: str, extended: bool) -> tuple:
    m = re.match(r"(\d+|\$)?(?:,(\d+|\$))?", script)
    a1, a2 = m.group(1), m.group(2)
    if a1 is None and a2 is not None:
        raise _SedUnsupported("address")
    if a1 == "0" or a2 == "0":
        raise _SedUnsupported("line 0")
    rest = script[m.end():]
    if rest == "p":
        return a1, a2, "p", None
    if rest.startswith("s/"):
        regex, i = _sed_split(rest, 2, "regex")
        repl, i = _sed_split(rest, i, "replacement")
        flags = rest[i:]
        if not re.fullmatch(r"[gp]*", flags) or len(set(flags)) != len(flags):
            raise _SedUnsupported(f"s flags {flags!r}")
        if not regex:
            raise _SedUnsupported("empty regex")
        return a1, a2, "s", (_sed_regex(regex, extended), _sed_repl(repl), "g" in flags, "p" in flags)
    raise _SedUnsupported(f"command {script!r}")


def _sed_selected(n: int, last: int, a1: str | None, a2: str | None) -> bool:
    if a1 is None:
        return True
    lo = last if a1 == "$" else int(a1)
    if a2 is None:
        return n == lo
    hi = last if a2 == "$" else int(a2)
    return lo <= n <= max(lo, hi) if a1 != "$" else n == last


@_builtin
def _sed(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    args, quiet, extended, operands = argv[1:], False, False, []
    try:
        while args:
            arg = args.pop(0)
            if arg == "--":
                operands += args
                break
            if arg.startswith("-") and len(arg) > 1 and not operands:
                for letter in arg[1:]:
                    if letter == "n":
                        quiet = True
                    elif letter in "Er":
                        extended = True
                    else:
                        raise _SedUnsupported(f"option -{letter}")
            else:
                operands.append(arg)
        if not operands:
            raise _SedUnsupported("no script")
        a1, a2, cmd, sub = _sed_parse(operands[0], extended)
    except _SedUnsupported as e:
        return 1, b"", f"sed: unsupported: {e}\n".encode()
    data, err, rc = bytearray(), [], 0
    for f in operands[1:] or ["-"]:
        if f in ("-", "/dev/stdin"):
            data += stdin
            continue
        try:
            chunk = ctx.fs.read(f)
        except FSError:
            err.append(f"sed: can't read {f}: No such file or directory")
            rc = 2
            continue
        if chunk and not chunk.endswith(b"\n") and f != operands[-1]:
            chunk += b"\n"  # GNU sed ends a line at the end of each file but the last
        data += chunk
    repl = sub[1] if sub else []

    def expand(m: re.Match) -> str:
        return "".join(v if kind == "lit" else (m.group(v) or "") for kind, v in repl)

    text = data.decode("latin-1")  # bytes, as with LC_ALL=C
    lines = text.split("\n")
    final_newline = lines[-1] == ""
    if final_newline:
        lines.pop()
    out: list[str] = []
    missing = False

    def emit(line: str, n: int) -> None:
        nonlocal missing
        if missing:
            out.append("\n")
        out.append(line)
        missing = n == len(lines) and not final_newline
        if not missing:
            out.append("\n")

    for n, line in enumerate(lines, start=1):
        selected = _sed_selected(n, len(lines), a1, a2)
        if selected and cmd == "p":
            emit(line, n)
        elif selected and cmd == "s":
            rx, _, glob, show = sub
            try:
                new, count = rx.subn(expand, line, count=0 if glob else 1)
            except (IndexError, re.error):
                return 1, b"", b"sed: unsupported: a back-reference to a group the regex does not have\n"
            line = new
            if count and show:
                emit(line, n)
        if not quiet:
            emit(line, n)
    return rc, "".join(out).encode("latin-1"), _msg(err)


@_builtin
def _ls(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    flags, _, paths = _getopt(argv, "1alAdh")
    fs, out, err = ctx.fs, [], []

    def line(path: str, name: str) -> str:
        if "l" not in flags:
            return name
        st, is_dir = fs.stat(path), fs.isdir(path)
        stamp = _strftime("%b %e %H:%M", st.mtime, _zone(ctx))
        return f"{_mode_string(st.mode, is_dir)} {1:>4} root     root     {len(st.data):>9} {stamp} {name}"

    paths = paths or ["/"]
    listed_dirs = [p for p in paths if fs.isdir(p) and "d" not in flags]
    for p in paths:
        if not fs.exists(p):
            err.append(f"ls: {p}: No such file or directory")
        elif p not in listed_dirs:
            out.append(line(p, p))
    for p in listed_dirs:
        if len(paths) > 1:
            out.append(("\n" if out else "") + f"{p}:")
        names = fs.listdir(p)
        if "a" in flags:
            names = [".", "..", *names]
        for name in names:
            if name.startswith(".") and not ({"a", "A"} & flags):
                continue
            out.append(line(normpath(p + "/" + name) if name not in (".", "..") else p, name))
    return (1 if err else 0), _msg(out), _msg(err)


async def _sleep(argv: list[str], stdin: bytes, ctx: ShellContext) -> _Out:
    total = 0.0
    for arg in argv[1:]:
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", arg)
        if not m:
            return 1, b"", f"sleep: invalid number '{arg}'\n".encode()
        total += float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if len(argv) < 2:
        return 1, b"", b"sleep: missing operand\n"
    await asyncio.sleep(total)
    return 0, b"", b""


_BUILTINS: dict[str, CommandFn] = {
    "echo": _echo,
    "printf": _printf,
    "cat": _cat,
    "cp": _cp,
    "mv": _mv,
    "mkdir": _mkdir,
    "rm": _rm,
    "rmdir": _rmdir,
    "touch": _touch,
    "tee": _tee,
    "test": _test,
    "[": _test,
    "true": _true,
    ":": _true,
    "false": _false,
    "base64": _base64,
    "hostname": _hostname,
    "date": _date,
    "stat": _stat,
    "sleep": _sleep,
    "chmod": _chmod,
    "sha256sum": _sha256sum,
    "grep": _grep,
    "ls": _ls,
    "sed": _sed,
}
