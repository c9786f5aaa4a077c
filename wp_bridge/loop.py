"""The unattended bridge loop (``schedule``): poll KiviCare every ``poll_seconds`` (the near window; the far
window when ``far_poll_seconds`` have passed, ``Bridge.poll(scope="due")``), pull Google every
``poll_seconds`` in a thread of its own (so a slow pull never delays a KiviCare poll), run jobs in
workers, and once a day (and once at start) purge old log rows (``wp_bridge.retention``).

A poll of both windows also runs at once when something asks for it (a doctor connected, a setting
changed, hints were dropped): what changed may be anywhere in the horizon.
KiviCare or Google being down never ends the loop: the poll logs and tries again next time, and
jobs wait with backoff. Only ``RefuseToRun`` (another Google integration active) stops it.
"""

from __future__ import annotations

import logging
import threading
import time

import schedule

from . import retention
from .jobs import worker_id
from .kivicare import KiviCareError

log = logging.getLogger(__name__)


class BridgeLoop:
    """``BridgeLoop(runtime).start()`` runs in background threads; ``stop()`` ends them."""

    def __init__(self, runtime, workers: int | None = None):
        self.rt = runtime
        self.bridge = runtime.bridge
        self.workers = workers or int(runtime.cfg.get("bridge.workers"))
        self.poll_seconds = int(runtime.cfg.get("bridge.poll_seconds"))
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.scheduler = schedule.Scheduler()  # the daily purge (polls run on a fixed rate of their own)
        self.pull_scheduler = schedule.Scheduler()  # Google pulls, in their own thread
        self.started = threading.Event()  # the start checks passed: pulls may begin
        self.pull_requested = threading.Event()  # a requested poll pulls at once too
        self.work_available = runtime.work_available

    def start(self, poller: bool = True) -> None:
        """``poller`` False: job workers only (``python -m sidecar worker``; ``serve`` polls)."""
        if poller:
            self.scheduler.every(1).days.do(self.purge)
            self.pull_scheduler.every(self.poll_seconds).seconds.do(self.pull)
            self.threads.append(threading.Thread(target=self._poller, name="poller", daemon=True))
            self.threads.append(threading.Thread(target=self._puller, name="puller", daemon=True))
        for n in range(self.workers):
            self.threads.append(threading.Thread(target=self._worker, name=f"worker-{n}", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 10) -> None:
        self.stopping.set()
        self.rt.poll_requested.set()
        self.pull_requested.set()
        self.work_available.set()
        for thread in self.threads:
            thread.join(timeout)

    def poll(self, scope: str = "all") -> None:
        """Poll KiviCare (``scope`` as ``Bridge.poll``); logs failures, never raises. Google is pulled by the
        puller thread, so a slow pull never delays the next KiviCare poll."""
        try:
            # A timed poll lists the far window at the tick nearest its interval, not one tick after it.
            report = self.bridge.poll(scope, slack=self.poll_seconds / 2 if scope == "due" else 0.0)
            if report.put_off:
                from .bridge import BACKLOG_LONGEST_WAIT, BACKLOG_PUT_OFF
                log.info("poll put off: more than %d pushes are waiting to be written (listed again once they "
                         "are, or within %d s)", BACKLOG_PUT_OFF, BACKLOG_LONGEST_WAIT.total_seconds())
                return
            log.info("poll (%s): %d appointments listed, %d fetched, %d skipped, %d deleted, %d jobs queued",
                     "+".join(report.windows) or "nothing", report.listed, report.fetched, report.rejected,
                     report.deleted, report.enqueued)
            if report.enqueued:
                self.work_available.set()
        except KiviCareError as exc:
            log.warning("KiviCare could not be read; nothing changed, trying again: %s", exc)
        except Exception:  # the loop must outlive any bug in one poll
            log.exception("poll failed")

    def pull(self) -> None:
        """Pull Google → KiviCare (each connection's calendars, incrementally, several at once); never raises."""
        try:
            self.bridge.pull_all()
            self.work_available.set()
        except Exception:
            log.exception("pull failed")

    def purge(self) -> None:
        """Delete log rows older than ``sync.log_retention_days`` (batched); never ends the loop."""
        try:
            removed = retention.purge(self.rt.cfg)
        except Exception:  # e.g. the database briefly locked: tomorrow's run catches up
            log.exception("purging old log rows failed")
            return
        if any(removed.values()):
            log.info("purged old rows: %s", ", ".join(f"{n} {table}" for table, n in removed.items() if n))

    def _startup(self) -> bool:
        """Run the start checks until KiviCare answers. False when syncing must not start (RefuseToRun)."""
        from .bridge import RefuseToRun
        delay = 5.0
        while not self.stopping.is_set():
            try:
                self.bridge.startup(stop=self.stopping)
                self.rt.clear_state("refused")
                return True
            except RefuseToRun as exc:
                log.error("not syncing: %s", exc)
                self.rt.set_state("refused", str(exc))
                return False
            except KiviCareError as exc:
                log.warning("KiviCare not ready (%s); checking again in %d s", exc, delay)
            except Exception:
                log.exception("start checks failed")
            if self.rt.poll_requested.wait(timeout=delay):  # a settings change retries at once
                self.rt.poll_requested.clear()
            delay = min(delay * 2, 300)
        return False

    def _poller(self) -> None:
        if not self._startup() or self.stopping.is_set():  # stopped during the start checks: no poll
            return
        self.started.set()
        # Polls start every poll_seconds on a fixed rate (from each poll's start, not its end: a poll listing a
        # thousand rows takes a second or two, which must not stretch the interval).
        next_poll = time.monotonic()
        self.poll("due")  # nothing listed since start: both windows
        self.purge()  # a process restarted more often than daily still purges
        while not self.stopping.is_set():
            next_poll = max(next_poll + self.poll_seconds, time.monotonic() - self.poll_seconds)
            self.scheduler.run_pending()
            while not self.stopping.is_set() and time.monotonic() < next_poll:
                wait = min(self._idle(self.scheduler), next_poll - time.monotonic())
                if self.rt.poll_requested.wait(timeout=max(0.0, wait)) and not self.stopping.is_set():
                    self.rt.poll_requested.clear()
                    self.poll()
                    self.pull_requested.set()
                self.scheduler.run_pending()
            if not self.stopping.is_set():
                self.poll("due")

    def _puller(self) -> None:
        while not self.started.wait(timeout=1.0):
            if self.stopping.is_set():
                return
        self.pull()
        while not self.stopping.is_set():
            self.pull_scheduler.run_pending()
            if self.pull_requested.wait(timeout=self._idle(self.pull_scheduler)) and not self.stopping.is_set():
                self.pull_requested.clear()
                self.pull()

    @staticmethod
    def _idle(scheduler: schedule.Scheduler) -> float:
        """Seconds to sleep before the scheduler's next job is due (at most 1, so a stop is seen soon)."""
        due = scheduler.idle_seconds
        return 1.0 if due is None else min(1.0, max(0.05, due))

    def _worker(self) -> None:
        name = worker_id(threading.current_thread().name)
        while not self.stopping.is_set():
            # Cleared before looking, so work queued while we run is not slept through.
            self.work_available.clear()
            try:
                ran = self.bridge.run_due_jobs(name, stop=self.stopping)  # a stop is not held up by a long queue
            except Exception:  # e.g. the database briefly locked; try again shortly
                log.exception("worker error")
                ran = 0
            if not ran:
                self.work_available.wait(timeout=1.0)
