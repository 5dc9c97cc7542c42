"""The simulated nodes' sh: what a script run through ``nsenter … sh -c`` sees and leaves behind."""

from __future__ import annotations

import base64
import textwrap

import pytest
import yaml
from helpers import guide_registries

from sandbox.memfs import FSError, MemFS
from sandbox.shell import SUPPORTED, ShellContext, run_script

NOW = 1795700703.25  # Thu Nov 26 13:45:03 UTC 2026


@pytest.fixture
def fs() -> MemFS:
    return MemFS(clock=lambda: NOW)


@pytest.fixture
def ctx(fs: MemFS) -> ShellContext:
    return ShellContext(
        fs=fs, hostname="dellmini1", env={"HOME": "/root", "PATH": "/usr/bin:/bin"}, clock=lambda: NOW
    )


# The privileged pod of the guide's "Deploying via kubectl" section, as kubectl would send it
# (the outer unquoted here-document has already turned \$(hostname) into $(hostname)).
GUIDE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: regconfig-dellmini1
  namespace: default
spec:
  nodeName: dellmini1
  restartPolicy: Never
  hostPID: true
  containers:
    - name: writer
      image: alpine:latest
      securityContext:
        privileged: true
      command:
        - nsenter
        - -t
        - "1"
        - -m
        - -u
        - -i
        - -n
        - --
        - sh
        - -c
        - |
          mkdir -p /etc/rancher/k3s
          cat > /etc/rancher/k3s/registries.yaml << 'EOF'
          {registries}          EOF
          echo "Done on $(hostname)"
""".format(registries=textwrap.indent(guide_registries(), " " * 10).lstrip())

EXPECTED_REGISTRIES = guide_registries()


async def run(ctx: ShellContext, script: str):
    return await run_script(script, ctx)


# -- the guide's scripts ---------------------------------------------------------------------


async def test_guide_registries_heredoc_writes_the_exact_file(ctx, fs):
    script = yaml.safe_load(GUIDE_POD)["spec"]["containers"][0]["command"][-1]
    result = await run(ctx, script)
    assert (result.rc, result.stdout, result.stderr) == (0, "Done on dellmini1\n", "")
    assert fs.read("/etc/rancher/k3s/registries.yaml").decode() == EXPECTED_REGISTRIES
    assert fs.stat("/etc/rancher/k3s/registries.yaml").mode == 0o644


async def test_guide_restart_script_calls_systemctl_with_its_arguments(ctx):
    calls = []

    async def systemctl(argv, stdin, cctx):
        calls.append((argv, stdin, cctx.env.get("HOME"), cctx.fs is ctx.fs))
        return 0, b"", b""

    ctx.commands["systemctl"] = systemctl
    result = await run(ctx, "systemctl restart k3s && echo done")
    assert (result.rc, result.stdout) == (0, "done\n")
    assert calls == [(["systemctl", "restart", "k3s"], b"", "/root", True)]


async def test_caller_command_failure_short_circuits_and_and_its_output_is_kept(ctx):
    async def systemctl(argv, stdin, cctx):
        return 5, b"", b"Failed to restart k3s.service: Unit k3s.service not found.\n"

    ctx.commands["systemctl"] = systemctl
    result = await run(ctx, "systemctl restart k3s && echo done")
    assert result.rc == 5
    assert result.stdout == ""
    assert result.stderr == "Failed to restart k3s.service: Unit k3s.service not found.\n"


async def test_command_named_by_path_and_prefix_assignment_reach_the_caller_command(ctx):
    seen = {}

    async def k3s(argv, stdin, cctx):
        seen.update(argv=argv, token=cctx.env.get("TOKEN"), stdin=stdin)
        return 0, b"ok\n", b""

    ctx.commands["k3s"] = k3s
    result = await run(ctx, 'echo input | TOKEN=s3cret /usr/local/bin/k3s check-config; echo "[$TOKEN]"')
    assert result.stdout == "ok\n[]\n"
    assert seen == {"argv": ["k3s", "check-config"], "token": "s3cret", "stdin": b"input\n"}


# -- strictness --------------------------------------------------------------------------------


async def test_unknown_command_stops_the_script_with_127(ctx):
    result = await run(ctx, "echo before\nfoo --bar\necho after")
    assert (result.rc, result.stdout, result.stderr) == (127, "before\n", "sh: foo: not found\n")


async def test_unknown_command_stops_even_inside_a_list_or_substitution(ctx):
    assert (await run(ctx, "foo || echo fallback")).stdout == ""
    result = await run(ctx, 'X="$(nope)"; echo reached')
    assert (result.rc, result.stdout, result.stderr) == (127, "", "sh: nope: not found\n")


async def test_not_found_message_ignores_redirections(ctx):
    result = await run(ctx, "foo 2>/dev/null")
    assert result.stderr == "sh: foo: not found\n"


@pytest.mark.parametrize(
    ("script", "name"),
    [
        ("if true; then echo x; fi", "if"),
        ("for n in a b; do echo $n; done", "for"),
        ("while true; do :; done", "while"),
        ("case x in x) echo;; esac", "case"),
        ("function f { :; }", "function"),
        ("(echo sub)", "("),
        ("{ echo group; }", "{"),
        ("echo `hostname`", "`"),
        ("sleep 1 &", "&"),
        ("echo $((1+2))", "$(("),
        ("cat <(echo x)", "<("),
        ("f() { :; }", "("),
        ("echo ${X%.yaml}", "${X%.yaml}"),
        ("cat <<< word", "<<<"),
    ],
)
async def test_unsupported_constructs_give_127(ctx, script, name):
    result = await run(ctx, "echo first\n" + script + "\necho never")
    assert (result.rc, result.stdout, result.stderr) == (127, "first\n", f"sh: {name}: not found\n")


async def test_syntax_error_gives_2_and_stops(ctx):
    result = await run(ctx, 'echo ok\necho "unterminated')
    assert (result.rc, result.stdout) == (2, "ok\n")
    assert result.stderr == "sh: syntax error: unterminated quoted string\n"


def test_supported_subset_is_documented():
    for item in ("&&", "<<-", "set -e", "base64", "stat", "not found"):
        assert item in SUPPORTED


# -- lists, pipes, status ---------------------------------------------------------------------


async def test_and_or_short_circuit(ctx):
    result = await run(ctx, "true && echo a || echo b; false && echo c || echo d; false || true && echo e")
    assert result.stdout == "a\nd\ne\n"
    assert result.rc == 0


async def test_exit_status_is_the_last_commands_and_failures_do_not_stop_without_set_e(ctx):
    result = await run(ctx, "cat /missing\necho still here\nfalse")
    assert (result.rc, result.stdout) == (1, "still here\n")
    assert result.stderr == "cat: can't open '/missing': No such file or directory\n"


async def test_status_variable_and_negation(ctx):
    result = await run(ctx, "false; echo $?; ! false; echo $?; ! true; echo $?")
    assert result.stdout == "1\n0\n1\n"


async def test_set_e_stops_at_first_failure_outside_and_or_lists(ctx):
    result = await run(
        ctx, "set -e\nfalse || echo recovered\nfalse && echo no\necho go on\ncat /nope\necho never"
    )
    assert result.stdout == "recovered\ngo on\n"
    assert result.rc == 1


async def test_set_eu_reports_unset_variables(ctx):
    result = await run(ctx, "set -eu\necho $MISSING\necho never")
    assert (result.rc, result.stdout, result.stderr) == (2, "", "sh: MISSING: parameter not set\n")


async def test_exit_stops_the_script_but_only_leaves_a_substitution(ctx):
    result = await run(ctx, 'X=$(echo in; exit 3); echo "$X $?"; exit 4; echo never')
    assert (result.rc, result.stdout) == (4, "in 3\n")


async def test_pipes_feed_stdout_to_stdin(ctx):
    result = await run(
        ctx, "echo -n registry-user:tok | base64 | base64 -d; echo; printf 'a\\nb\\nc\\n' | grep -v b"
    )
    assert result.stdout == "registry-user:tok\na\nc\n"


async def test_pipeline_status_and_pipefail(ctx):
    assert (await run(ctx, "false | true")).rc == 0
    assert (await run(ctx, "set -o pipefail; false | true")).rc == 1


# -- quoting and expansion --------------------------------------------------------------------


async def test_hostname_substitution_and_nested_substitution(ctx):
    result = await run(ctx, 'echo "Done on $(hostname)"; echo $(echo $(hostname | base64))')
    assert result.stdout == "Done on dellmini1\n" + base64.b64encode(b"dellmini1\n").decode() + "\n"


async def test_quotes_escapes_and_word_splitting(ctx):
    script = (
        "X='a   b'\n"
        "printf '[%s]' $X \"$X\" '$X' \"\" ${X}; echo\n"
        'echo "tab\\there" \'single \\n\' \\$HOME "\\$HOME \\"q\\"" a\\ b\n'
        "echo one \\\n  two # a comment\n"
    )
    result = await run(ctx, script)
    assert result.stdout == '[a][b][a   b][$X][][a][b]\ntab\\there single \\n $HOME $HOME "q" a b\none two\n'


async def test_variables_defaults_and_specials(ctx):
    ctx.env["SSL_CERT_FILE"] = "/etc/ssl/ca.pem"
    script = 'A=1; B=${MISSING:-dflt}; echo "$A ${A}x $B ${A:+set} ${E-} $SSL_CERT_FILE $0" ~/k $$'
    result = await run(ctx, script)
    assert result.stdout == "1 1x dflt set  /etc/ssl/ca.pem sh /root/k 4242\n"
    assert ctx.env == {"HOME": "/root", "PATH": "/usr/bin:/bin", "SSL_CERT_FILE": "/etc/ssl/ca.pem"}


async def test_export_and_unset(ctx):
    seen = []

    async def show(argv, stdin, cctx):
        seen.append(cctx.env.get("K"))
        return 0, b"", b""

    ctx.commands["show"] = show
    await run(ctx, "export K=v; show; unset K; show")
    assert seen == ["v", None]


async def test_unquoted_wildcards_glob_against_the_filesystem(ctx, fs):
    fs.mkdir("/etc/rancher/k3s", parents=True)
    fs.write("/etc/rancher/k3s/registries.yaml", b"")
    fs.write("/etc/rancher/k3s/config.yaml", b"")
    result = await run(ctx, "echo /etc/rancher/k3s/*.yaml; echo '/etc/*'; echo /none/*")
    assert result.stdout == "/etc/rancher/k3s/config.yaml /etc/rancher/k3s/registries.yaml\n/etc/*\n/none/*\n"


# -- here-documents and redirections -----------------------------------------------------------


async def test_heredoc_variants(ctx, fs):
    script = (
        "cat > /tmp/a << EOF\nhost=$(hostname) home=$HOME \\$HOME\nEOF\n"
        'cat > /tmp/b << "EOF"\nhost=$(hostname)\n EOF\nEOF\n'
        "cat > /tmp/c <<-EOF\n\t\tindented $HOME\n\tEOF\n"
        "cat <<EOF | grep -c line\nline 1\nline 2\nEOF\n"
    )
    fs.mkdir("/tmp")
    result = await run(ctx, script)
    assert (result.rc, result.stdout, result.stderr) == (0, "2\n", "")
    assert fs.read("/tmp/a") == b"host=dellmini1 home=/root $HOME\n"
    assert fs.read("/tmp/b") == b"host=$(hostname)\n EOF\n"
    assert fs.read("/tmp/c") == b"indented /root\n"


async def test_redirections(ctx, fs):
    fs.mkdir("/tmp")
    script = (
        "echo one > /tmp/f; echo two >> /tmp/f\n"
        "cat < /tmp/f\n"
        "cat /nope 2> /tmp/err; echo rc=$?\n"
        "cat /nope /tmp/f > /tmp/both 2>&1\n"
        "echo hidden > /dev/null; cat /nope 2>/dev/null; echo to-err >&2; echo to-err2 > /dev/stderr\n"
        "> /tmp/empty\n"
    )
    result = await run(ctx, script)
    assert result.stdout == "one\ntwo\nrc=1\n"
    assert result.stderr == "to-err\nto-err2\n"
    assert fs.read("/tmp/err") == b"cat: can't open '/nope': No such file or directory\n"
    assert fs.read("/tmp/both") == b"one\ntwo\ncat: can't open '/nope': No such file or directory\n"
    assert fs.read("/tmp/empty") == b""
    assert "/dev/null" not in fs.files()


async def test_failed_redirections_report_like_busybox(ctx):
    result = await run(ctx, "echo x > /no/dir/f; echo rc=$?; cat < /nope")
    assert result.stdout == "rc=1\n"
    assert (
        result.stderr
        == "sh: can't create /no/dir/f: nonexistent directory\nsh: can't open /nope: no such file\n"
    )
    assert result.rc == 1


# -- builtins -------------------------------------------------------------------------------------


async def test_stat_formats(ctx, fs):
    fs.write("/cfg", b"hello")
    result = await run(ctx, "stat -c %Y /cfg; stat -c '%s %a %n %A' /cfg; stat -c %y /cfg; stat -c %Y /nope")
    assert result.stdout == "1795700703\n5 644 /cfg -rw-r--r--\n2026-11-26 13:45:03.250000000 +0000\n"
    assert result.stderr == "stat: can't stat '/nope': No such file or directory\n"
    assert result.rc == 1


async def test_date_formats(ctx):
    result = await run(ctx, "date; date -u +%s; date +%Y-%m-%dT%H:%M:%SZ; date -Iseconds")
    assert result.stdout == (
        "Thu Nov 26 13:45:03 UTC 2026\n1795700703\n2026-11-26T13:45:03Z\n2026-11-26T13:45:03+00:00\n"
    )


async def test_base64_encode_decode_and_bad_input(ctx, fs):
    fs.write("/secret", b"registry-user:token")
    result = await run(
        ctx, "base64 /secret; echo cmVnaXN0cnktdXNlcjp0b2tlbg== | base64 -d; echo; echo '!!' | base64 -d"
    )
    assert result.stdout == "cmVnaXN0cnktdXNlcjp0b2tlbg==\nregistry-user:token\n"
    assert (result.rc, result.stderr) == (1, "base64: invalid input\n")


async def test_file_commands_and_their_errors(ctx, fs):
    script = (
        "mkdir /etc/rancher/k3s\n"
        "mkdir -p /etc/rancher/k3s && echo made\n"
        "mkdir /etc/rancher\n"
        "echo data > /etc/rancher/k3s/registries.yaml\n"
        "cp -p /etc/rancher/k3s/registries.yaml /etc/rancher/k3s/registries.yaml.bak\n"
        "cp /nope /tmp/x\n"
        "mv /etc/rancher/k3s/registries.yaml.bak /etc/rancher/\n"
        "mv /nope /x\n"
        "chmod 600 /etc/rancher/k3s/registries.yaml\n"
        "ls /etc/rancher /etc/rancher/k3s\n"
        "rm /etc/rancher/k3s; rm /nope; rm -f /nope; rm -rf /etc/rancher/k3s; ls /etc/rancher/k3s\n"
    )
    result = await run(ctx, script)
    assert (
        result.stdout
        == "made\n/etc/rancher:\nk3s\nregistries.yaml.bak\n\n/etc/rancher/k3s:\nregistries.yaml\n"
    )
    assert result.stderr.splitlines() == [
        "mkdir: can't create directory '/etc/rancher/k3s': No such file or directory",
        "mkdir: can't create directory '/etc/rancher': File exists",
        "cp: can't stat '/nope': No such file or directory",
        "mv: can't rename '/nope': No such file or directory",
        "rm: '/etc/rancher/k3s' is a directory",
        "rm: can't remove '/nope': No such file or directory",
        "ls: /etc/rancher/k3s: No such file or directory",
    ]
    assert fs.read("/etc/rancher/registries.yaml.bak") == b"data\n"


async def test_chmod_and_sha256sum(ctx, fs):
    fs.write("/f", b"abc")
    result = await run(ctx, "chmod 600 /f; stat -c %a /f; chmod u+x,go-rwx /f; stat -c %a /f; sha256sum /f")
    assert result.stdout == (
        "600\n700\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  /f\n"
    )


@pytest.mark.parametrize(
    ("expr", "rc"),
    [
        ("[ -f /etc/hosts ]", 0),
        ("[ -d /etc ]", 0),
        ("[ -e /missing ]", 1),
        ("[ ! -e /missing ]", 0),
        ("[ -s /etc/empty ]", 1),
        ("[ -s /etc/hosts ]", 0),
        ('[ -n "" ]', 1),
        ('[ -z "" ]', 0),
        ("[ abc = abc ]", 0),
        ("[ abc != abc ]", 1),
        ("[ 10 -gt 9 ]", 0),
        ("[ 3 -le 2 ]", 1),
        ("test 2 -eq 2 -a -d /etc", 0),
        ("[ x = x", 2),
        ("[ a -lt 2 ]", 2),
    ],
)
async def test_test_builtin(ctx, fs, expr, rc):
    fs.mkdir("/etc")
    fs.write("/etc/hosts", b"127.0.0.1 localhost\n")
    fs.write("/etc/empty", b"")
    assert (await run(ctx, expr)).rc == rc


async def test_grep(ctx, fs):
    fs.write("/r.yaml", b'configs:\n  "registry.bto.bar":\n    tls:\n      insecure_skip_verify: true\n')
    script = (
        "grep -q insecure_skip_verify /r.yaml && echo yes\n"
        "grep registry /r.yaml\n"
        "grep -c 'tls\\|configs' /r.yaml\n"
        "grep -q nothing /r.yaml; echo $?\n"
        "grep x /missing; echo $?\n"
        "printf 'Www-Authenticate: Bearer\\r\\n' | grep -i www-authenticate\n"
    )
    result = await run(ctx, script)
    assert result.stdout == 'yes\n  "registry.bto.bar":\n2\n1\n2\nWww-Authenticate: Bearer\r\n'
    assert result.stderr == "grep: /missing: No such file or directory\n"


async def test_echo_printf_and_sleep(ctx):
    result = await run(
        ctx, "echo -n a; echo -e 'b\\tc'; echo -e 'x\\cy'; printf '%s=%d\\n' a 1 b 2; sleep 0.01"
    )
    assert result.stdout == "ab\tc\nxa=1\nb=2\n"
    assert result.rc == 0


# -- MemFS ----------------------------------------------------------------------------------------


def test_memfs_paths_modes_and_errors():
    ticks = iter(range(100, 200))
    fs = MemFS(clock=lambda: float(next(ticks)))
    assert fs.isdir("/") and fs.listdir("/") == []
    with pytest.raises(FSError, match="No such file or directory"):
        fs.write("/a/b", b"x")
    fs.mkdir("/a/b", parents=True)
    fs.write("//a/./b/../b/f", b"1", mode=0o600)
    fs.write("/a/b/f", b"2")
    assert fs.read("/a/b/f") == b"2" and fs.stat("/a/b/f").mode == 0o600
    fs.write("/a/b/f", b"3", append=True)
    assert fs.files() == {"/a/b/f": "23"}
    with pytest.raises(FSError, match="Is a directory"):
        fs.read("/a")
    with pytest.raises(FSError, match="Not a directory"):
        fs.read("/a/b/f/x")
    with pytest.raises(FSError, match="File exists"):
        fs.mkdir("/a")
    with pytest.raises(FSError, match="Is a directory"):
        fs.remove("/a")
    fs.mkdir("/c")
    fs.copy("/a/b/f", "/c")
    fs.rename("/a/b", "/c/moved")
    assert fs.files() == {"/c/f": "23", "/c/moved/f": "23"}
    assert fs.listdir("/c") == ["f", "moved"]
    fs.remove("/c", recursive=True)
    assert fs.listdir("/") == ["a"]
    assert fs.read("/dev/null") == b"" and fs.exists("/dev/null")


# ---------------------------------------------------------------------------------------------- sed
SED_INPUT = "alpha: 1\n  password: hunter2 # c\n\tbeta=2\nlast line: x\n"
SED_CASES = [
    (["-n", "2,3p"], SED_INPUT),
    (["-n", "3p"], SED_INPUT),
    (["-n", "3,$p"], SED_INPUT),
    (["-n", "$p"], SED_INPUT),
    (["-n", "3,2p"], SED_INPUT),
    (["p"], "a\nb"),  # no newline at the end: GNU prints the last line without one
    (["-n", "1,2p"], "a\nb"),
    (["s/a/X/"], "banana\n"),
    (["s/a/X/g"], "banana\n"),
    (["-E", "s/(an)+/<&>/"], "banana\n"),
    (["-E", r"s/^([ 	]*)([a-z]+): .*$/\1\2: <masked>/"], SED_INPUT),
    ([r"s/\(b\)\(a\)/\2\1/g"], "banana\n"),
    (["-E", "s/[[:digit:]]+/N/g"], "a1b22c333\n"),
    (["-E", "s/[^][ ]+/w/g"], "a [b] c\n"),
    (["-E", r"s/a\.b/X/"], "a.b axb\n"),
    (["-n", "-E", "2s/^(.*)$/[\\1]/p"], SED_INPUT),
    (["-n", "s/^\\([0-9]*\\):.*$/\\1/p"], "12:secret\nnope\n3:x\n"),
    (["-E", "s/x*/-/g"], "abc\n"),
    (["-E", "s/(a|ab)(c|bcd)(d*)/[\\1,\\2,\\3]/"], "abcd\n"),
]


@pytest.mark.parametrize("args,data", SED_CASES, ids=[" ".join(a) for a, _ in SED_CASES])
async def test_sed_matches_gnu_sed(ctx, fs, args, data):
    import shlex
    import subprocess

    from helpers import require_binary
    sed = require_binary("sed")
    real = subprocess.run([sed, *args], input=data.encode(), capture_output=True, env={"LC_ALL": "C"})
    fs.write("/in", data.encode())
    res = (await run_script(f"sed {' '.join(shlex.quote(a) for a in args)} /in", ctx))
    assert (res.rc, res.stdout) == (real.returncode, real.stdout.decode()), args
    piped = (await run_script(f"cat /in | sed {' '.join(shlex.quote(a) for a in args)}", ctx))
    assert piped.stdout == real.stdout.decode()


async def test_sed_reads_several_files_and_reports_a_missing_one(ctx, fs):
    fs.write("/a", b"1\n2")
    fs.write("/b", b"3\n")
    res = (await run_script("sed -n p /a /missing /b", ctx))
    assert (res.rc, res.stdout) == (2, "1\n2\n3\n")
    assert "sed: can't read /missing: No such file or directory" in res.stderr


@pytest.mark.parametrize("script", ["-i s/a/b/ /in", "'1d' /in", "'s/a/b/;p' /in", "'/re/p' /in", "s,a,b, /in",
                                    "-e p /in", r"'s/\w/x/' /in", "'s/a/b/w /out' /in", "'y/a/b/' /in"])
async def test_sed_outside_the_subset_is_refused(ctx, fs, script):
    fs.write("/in", b"abc\n")
    res = (await run_script(f"sed {script}", ctx))
    assert res.rc == 1 and res.stderr.startswith("sed: unsupported"), res
    assert not fs.exists("/out")
