"""Scenario c: nothing changes for a few poll cycles, after the initial sync's queue drained.

Target (issue 7): per idle cycle one KiviCare request (the near window) and at most one Google request
per calendar; zero writes.
"""

from __future__ import annotations

import time

from .sandboxes import POLL_SECONDS, _google_requests, _kivicare_requests


def run(env, args, say) -> dict:
    """Count every request over ``args.idle_cycles`` × the poll interval. Returns the figures."""
    time.sleep(POLL_SECONDS)  # the initial sync's last pushes settle
    env.reset_requests()
    cycles = args.idle_cycles
    say(f"scenario c: idle for {cycles} cycles of {POLL_SECONDS} s ...")
    time.sleep(cycles * POLL_SECONDS)
    kreqs = env.kivicare.call(_kivicare_requests)
    greqs = [r for r in env.google.call(_google_requests) if r["path"].startswith("/calendar/v3/")]
    writes = sum(r["method"] not in ("GET", "HEAD") for r in kreqs) + \
        sum(r["method"] not in ("GET", "HEAD") and not r["path"].endswith("/watch") for r in greqs)
    calendars = len(env.calendars)
    figures = {"cycles": cycles, "kivicare_requests": len(kreqs), "google_requests": len(greqs),
               "kivicare_per_cycle": len(kreqs) / cycles, "google_per_calendar_cycle": len(greqs) / cycles / calendars,
               "writes": writes, "kivicare_paths": sorted({r["path"] for r in kreqs})}
    say(f"c: {figures['kivicare_per_cycle']:.2f} KiviCare requests per cycle, "
        f"{figures['google_per_calendar_cycle']:.2f} Google requests per calendar per cycle, {writes} writes")
    return figures


def verdict(per_cycle: float) -> str:
    """Exactly one near-window list per cycle is the target: more costs KiviCare, fewer means the loop
    polled less often than configured (slower pickup of changes without hints), so neither is "met"."""
    if 0.9 <= per_cycle <= 1.1:
        return "met"
    return "**not met** (more than one list per cycle)" if per_cycle > 1 else \
        "**not met** (the loop polled less often than configured)"


def rows(c: dict) -> list[str]:
    mark = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    return [
        f"| c: idle, {c['cycles']} poll cycles | KiviCare requests per cycle | {c['kivicare_per_cycle']:.2f} | | "
        f"| 1 (near window) | {verdict(c['kivicare_per_cycle'])} |",
        f"| c | Google requests per calendar per cycle | {c['google_per_calendar_cycle']:.2f} | | | ≤ 1 | "
        f"{mark(c['google_per_calendar_cycle'] <= 1)} |",
        f"| c | writes (KiviCare + Google) | {c['writes']} | | | 0 | {mark(c['writes'] == 0)} |",
    ]


def notes(c: dict) -> str:
    return (f"Scenario c counts every request over {c['cycles']} × {POLL_SECONDS} s (the configured poll interval) "
            f"after the initial sync's queue drained: {c['kivicare_requests']} KiviCare and {c['google_requests']} "
            f"Google requests in all. Idle KiviCare paths: "
            f"{', '.join(f'`{p}`' for p in c['kivicare_paths']) or 'none'}.")
