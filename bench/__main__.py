"""``python -m bench [NAME…]``: run the benchmarks (all by default) and print a summary.

Exit status: 0 when every benchmark ran (a MISS is a figure, not a crash), 1 when one raised,
2 on an unknown name, 130 when interrupted (SIGINT or SIGTERM; processes are stopped first).
"""

from __future__ import annotations

import importlib
import signal
import sys
import time
import traceback

from . import BENCHMARKS
from ._common import Row, table


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops its processes and removes its folders
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # the benchmarks' `finally` blocks have stopped their processes and removed their folders
        print("\nbench: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"bench: unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    rows: list[Row] = []
    errors = 0
    t_all = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        try:
            rows += importlib.import_module(f"bench.{name}").run()
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
            errors += 1
            traceback.print_exc()
            rows.append(Row(name, "ran", f"ERROR: {type(e).__name__}", "", "ERROR"))
        print(f"  ({name} took {time.monotonic() - t0:.1f} s)\n", flush=True)
    print("== summary")
    print(table(["benchmark", "figure", "value", "target", "verdict"],
                [[r.bench, r.figure, r.value, r.target, r.verdict] for r in rows]))
    judged = [r for r in rows if r.verdict]
    print(f"\n  {sum(r.verdict == 'PASS' for r in judged)} PASS, {sum(r.verdict == 'MISS' for r in judged)} MISS, "
          f"{errors} ERROR; total {time.monotonic() - t_all:.1f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
