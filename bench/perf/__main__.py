"""``python -m bench.perf [--full] [--appointments 1000] [--doctors 10] [--idle-cycles 5] [--report PATH]``

``--full`` = 10,000 appointments across 50 doctors (issue 7's scenario a).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.perf import idle, initial_sync, report  # noqa: E402
from bench.perf.environment import Environment  # noqa: E402
from bench.perf.sandboxes import USER_LIMIT  # noqa: E402

NOT_MEASURED = """Scenario b (steady churn, with and without companion hints), scenario d (Google → KiviCare moves and
busy events), scenario e (dashboard and log with 500 doctors and 1,000,000 log rows), the naive
baseline (every figure as ours / baseline / ratio) and scale-out (1, 2, 4 workers on PostgreSQL) are
**not measured** by this benchmark yet."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="10,000 appointments across 50 doctors")
    parser.add_argument("--appointments", type=int, default=1000)
    parser.add_argument("--doctors", type=int, default=10)
    parser.add_argument("--idle-cycles", type=int, default=5)
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients of the capacity measure")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give scenario a up after this many seconds")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.full:
        args.appointments, args.doctors = 10_000, 50
    say = lambda *a: print("[perf]", *a, flush=True)  # noqa: E731
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        say("measuring the sandboxes' capacity ...")
        capacity = env.measure_capacity(seconds=args.capacity_seconds, clients=args.clients)
        capacity["quota_bound_rps"] = args.doctors * USER_LIMIT / 60
        say(f"capacity: Google {capacity['google_rps']:.0f} req/s ({capacity['google_errors']} errors), "
            f"KiviCare {capacity['kivicare_rps']:.0f} req/s ({capacity['kivicare_errors']} errors)")
        say(f"connecting {args.doctors} doctors ...")
        env.connect_doctors()
        a = initial_sync.run(env, args, say)
        c = idle.run(env, args, say)
    sections = [(initial_sync.rows(a), ""), (idle.rows(c), idle.notes(c))]
    print(report.write(args.report, argv, capacity, sections, NOT_MEASURED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
