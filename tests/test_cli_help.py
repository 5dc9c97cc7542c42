"""The command line's own words: a mistyped option is named, every subcommand says what it does and how it exits."""

from __future__ import annotations

import pytest

from ghcr2gitea.cli import EXIT_CODES, build_parser


@pytest.mark.parametrize("argv", [["apply", "--plna", "p.yaml"], ["plan", "--pla", "p.yaml"], ["--plna", "p.yaml"]])
def test_a_mistyped_option_is_named_not_a_missing_required_one(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized argument: {argv[-2]}" in err and "required" not in err


def test_every_subcommand_help_has_a_description_and_its_exit_codes():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in subs.items():
        text = sub.format_help()
        assert sub.description and sub.description.split()[0] in text, name
        if name in EXIT_CODES:
            assert "exit codes: " in text, name
    assert set(EXIT_CODES) >= {"plan", "apply", "audit", "rewrite", "demo"}


def _options(parser, name=""):
    import argparse
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from _options(sub, f"{name} {sub_name}".strip())
        elif a.option_strings:
            yield name, a


def test_every_option_with_a_default_says_it_in_its_help():
    # issue 17: "defaults are shown" — an option that does something when left out says what
    missing = [f"{name} {a.option_strings[-1]} (default {a.default!r})" for name, a in _options(build_parser())
               if a.default not in (None, False, [], ()) and a.default != "==SUPPRESS=="
               and "default" not in (a.help or "").lower()]
    assert not missing, missing
