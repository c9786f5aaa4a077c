"""``python -m bench.perf`` (``make bench``): every scenario of issue 7 in one run, then docs/PERFORMANCE.md.

Order: the sandboxes' capacity; scenario a (initial sync), c (idle), b (churn without and with companion
hints) and d (Google → KiviCare) on one environment and one sidecar process; the naive baseline on a fresh
environment; e (the pages with 500 doctors and 1,000,000 log rows); scale-out (1, 2, 4 worker processes on
PostgreSQL). ``--skip b d …`` leaves scenarios out (for trying); ``--full`` = 10,000 appointments across
50 doctors for a, c, b, d.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.perf import baseline, churn, idle, inbound, initial_sync, pages, report, scaleout  # noqa: E402
from bench.perf.environment import Environment  # noqa: E402
from bench.perf.sandboxes import USER_LIMIT  # noqa: E402

PARTS = ("a", "c", "b", "d", "baseline", "e", "scaleout")


def _cells(row: str) -> list[str]:
    """A markdown table row's cells (no cell of ours contains a "|")."""
    return [cell.strip() for cell in row.strip()[1:-1].split("|")]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def with_baseline(rows: list[str], cells: dict[tuple[str, str], tuple[object, float | None, str]]) -> list[str]:
    """Fill the baseline and ratio columns of the rows whose (scenario, figure) start with a key of ``cells``:
    ``(baseline value, our value, unit)``; the ratio is ours ÷ baseline when both are numbers."""
    out = []
    for row in rows:
        parts = _cells(row)
        for (scenario, figure), (theirs, ours, unit) in cells.items():
            if len(parts) == 7 and parts[0].startswith(scenario) and parts[1].startswith(figure):
                base = _number(theirs)
                parts[3] = f"{theirs:.2f}{unit}" if base is not None else str(theirs)
                if base not in (None, 0) and ours is not None:
                    parts[4] = f"{ours / base:.3f}"
                elif isinstance(theirs, str) and theirs.startswith(">") and ours is not None:
                    cap = float(theirs[1:].split()[0])  # "> 60 s cap (k/N events)": the baseline took longer
                    parts[4] = f"< {ours / cap:.3f}"
                else:
                    parts[4] = "—"
                row = "| " + " | ".join(parts) + " |"
                break
        out.append(row)
    return out


def baseline_for(a: dict | None, c: dict | None, b: dict | None, cells: dict) -> dict:
    """Which of our rows get which baseline figure."""
    found: dict = {}
    if a:
        found[("a:", "wall time")] = (cells["a.wall_s"], a["wall_s"], " s")
        found[("a", "Google requests per created event")] = (cells["a.per_event"], a["per_event"], "")
        found[("a", "peak RSS")] = (cells["a.rss_mb"], a["rss_mb"], " MB")
    if c:
        found[("c:", "KiviCare requests per cycle")] = (cells["c.kivicare_per_cycle"], c["kivicare_per_cycle"], "")
        found[("c", "Google requests per calendar per cycle")] = (cells["c.google_per_calendar_cycle"],
                                                                  c["google_per_calendar_cycle"], "")
    if b:
        for phase in ("without hints", "with hints"):
            p95 = b["phases"].get(phase, {}).get("near", {}).get("p95")
            found[(f"b {phase}, near", "KiviCare → Google")] = (cells["b.latency_s"], p95, " s (p95)")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="10,000 appointments across 50 doctors")
    parser.add_argument("--appointments", type=int, default=1000)
    parser.add_argument("--doctors", type=int, default=10)
    parser.add_argument("--idle-cycles", type=int, default=5)
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients of the capacity measure")
    parser.add_argument("--capacity-seconds", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give scenario a up after this many seconds")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="scenarios to leave out")
    parser.add_argument("--full-a", action="store_true",
                        help="also scenario a at the issue's size (10,000 appointments, 50 doctors; ~2 more minutes)")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument("--baseline-timeout", type=float, default=60.0,
                        help="stop the baseline's initial sync after this many seconds (make bench's budget)")
    parser.add_argument("--baseline-cycle-cap", type=float, default=10.0)
    churn.add_arguments(parser)
    inbound.add_arguments(parser)
    parser.set_defaults(moves_seconds=45.0)  # make bench's budget: 1,000 actions in 45 s
    args = parser.parse_args(argv)
    if args.full:
        args.appointments, args.doctors = 10_000, 50
    began = time.monotonic()
    say = lambda *a: print(f"[perf {time.monotonic() - began:5.0f} s]", *a, flush=True)  # noqa: E731
    run = [p for p in PARTS if p not in args.skip]
    a = c = b = d = base = e = scale = None
    capacity: dict = {}
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        say("measuring the sandboxes' capacity ...")
        capacity = env.measure_capacity(seconds=args.capacity_seconds, clients=args.clients)
        capacity["quota_bound_rps"] = args.doctors * USER_LIMIT / 60
        say(f"capacity: Google {capacity['google_rps']:.0f} req/s ({capacity['google_errors']} errors), "
            f"KiviCare {capacity['kivicare_rps']:.0f} req/s ({capacity['kivicare_errors']} errors)")
        if any(p in run for p in ("a", "c", "b", "d")):
            say(f"connecting {args.doctors} doctors ...")
            env.connect_doctors()
            a = initial_sync.run(env, args, say)  # starts the sidecar: b, c and d need it
            c = idle.run(env, args, say) if "c" in run else None
            b = churn.run(env, args, say) if "b" in run else None
            d = inbound.run(env, args, say) if "d" in run else None
    a_full = None
    if args.full_a and not args.full:
        with Environment(doctors=50, appointments=10_000, say=say) as big:
            say("scenario a at the issue's size: connecting 50 doctors ...")
            big.connect_doctors()
            a_full = initial_sync.run(big, args, say)
    if "baseline" in run:
        with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as fresh:
            base = baseline.run(fresh, args, say)
    if "e" in run:
        e = pages.run(args, say)
    if "scaleout" in run:
        scale = scaleout.run(args, say)

    cells = baseline_for(a, c, b, baseline.baseline_cells(base)) if base else {}
    sections = []
    if a and "a" in run:
        sections.append((with_baseline(initial_sync.rows(a), cells), initial_sync.notes(a)))
    if a_full:
        sections.append((initial_sync.rows(a_full), "" if a else initial_sync.notes(a_full)))  # said once
    if c:
        sections.append((with_baseline(idle.rows(c), cells), idle.notes(c)))
    if b:
        sections.append((with_baseline(churn.rows(b), cells), churn.notes(b)))
    if d:
        sections.append((inbound.rows(d), inbound.notes(d)))
    if base:
        sections.append((baseline.rows(base), baseline.notes(base)))
    if e:
        sections.append((pages.rows(e), pages.notes(e)))
    if scale:
        sections.append((scaleout.rows(scale), scaleout.notes(scale)))
    skipped = [p for p in PARTS if p not in run]
    not_measured = (f"Left out of this run (`--skip`): {', '.join(skipped)}." if skipped else "")
    text = report.write(args.report, argv, capacity, sections, not_measured,
                        wall_s=time.monotonic() - began)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
