"""Regenerate the generated documentation: docs/troubleshooting.md from wizard/diagnose.py.

Run from the project root as ``python -m docs.gen`` or ``python docs/gen.py``; ``--check``
exits 1 (writing nothing) when a generated file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def generated() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    from wizard.diagnose import render_markdown
    return {DOCS / "troubleshooting.md": render_markdown()}


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text)
            print(f"wrote {path.relative_to(DOCS.parent)}")
    if check and stale:
        for path in stale:
            print(f"out of date: {path.relative_to(DOCS.parent)} (run: python -m docs.gen)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
