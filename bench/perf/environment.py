"""One benchmark environment: both sandboxes (own processes, latency and quota on), seeded doctors and
appointments, the sandboxes' capacity measured first, the doctors connected through the real OAuth code
flow, and the sidecar as a real ``python -m sidecar serve`` subprocess (as bench/soak.py runs it).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

from bench.soak import Sidecar, free_port, sidecar_env

from .sandboxes import (GOOGLE_LATENCY, KIVICARE_LATENCY, KIVICARE_PER_ROW, POLL_SECONDS, USER_LIMIT, UTC, VIDEO,
                        Remote, _add_google_doctors, _google_state, _kivicare_state, _method, _seed_kivicare,
                        _setattr, google_token, hammer)


class Environment:
    """Sandboxes, seeded data, connected doctors and (once ``start_sidecar`` ran) the sidecar process.

    ``settings`` are the sidecar's (``SIDECAR_*`` variables for the subprocess); ``extra`` overrides them.
    Use as a context manager: the sidecar and both sandbox processes stop on exit.
    """

    def __init__(self, *, doctors: int, appointments: int, say, extra: dict | None = None):
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        os.environ["OAUTHLIB_RELAX_TOKEN_SCOPE"] = "1"
        os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.say = say
        self.doctors_wanted, self.appointments_wanted = doctors, appointments
        self.extra = dict(extra or {})
        self.workdir = Path(tempfile.mkdtemp(prefix="perf-"))
        self.google = Remote("google", latency=GOOGLE_LATENCY, user_rate_limit=USER_LIMIT, conference_pending_reads=0)
        self.kivicare = Remote("kivicare", latency=KIVICARE_LATENCY, latency_per_row=KIVICARE_PER_ROW)
        self.sidecar: Sidecar | None = None
        self.gstate = self.google.call(_google_state)
        self.kstate = self.kivicare.call(_kivicare_state)
        self.today = datetime.now(UTC).date()
        self.seeded = self.kivicare.call(_seed_kivicare, doctors, appointments,
                                         (self.today + timedelta(days=1)).isoformat())
        self.calendars = self.google.call(_add_google_doctors, self.seeded["emails"])  # e-mail -> calendar id
        self.settings: dict = {}
        self.runtime = None

    def __enter__(self) -> "Environment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def measure_capacity(self, *, seconds: float, clients: int) -> dict:
        """Each sandbox's requests/s with latency on and ``clients`` concurrent clients (the Google per-user
        limit lifted for that measure only), so no figure is secretly the fake's limit."""
        self.google.call(_setattr, "user_rate_limit", 0)
        token = google_token(self.google, self.gstate, self.seeded["emails"][0])
        g_rps, g_bad = hammer(self.gstate["api_endpoint"] + "users/me/calendarList", seconds=seconds,
                              clients=clients, headers={"Authorization": f"Bearer {token}"})
        self.google.call(_setattr, "user_rate_limit", USER_LIMIT)
        k_rps, k_bad = hammer(self.kstate["base_url"] + "/wp-json/kivicare/v1/appointments", seconds=seconds,
                              clients=clients, auth=(self.kstate["username"], self.kstate["app_password"]),
                              params={"timezone": "UTC", "date_from": self.today.isoformat(),
                                      "date_to": self.today.isoformat(), "perPage": "all"})
        self.reset_requests()
        return {"google_rps": g_rps, "google_errors": g_bad, "kivicare_rps": k_rps, "kivicare_errors": k_bad,
                "clients": clients}

    def reset_requests(self) -> None:
        self.google.call(_method, "reset_requests")
        self.kivicare.call(_method, "reset_requests")

    def connect_doctors(self) -> None:
        """Every seeded doctor connects their calendar (real OAuth code flow, in this process, as
        bench/soak.py does) and confirms the first-sync preview; the sidecar has not started yet."""
        from sidecar.calendars.google_oauth import authorization_url, finish_authorization
        from sidecar.config import Config
        from sidecar.connections import choose_calendar, complete_authorization
        from sidecar.runtime import Runtime
        from wp_bridge import preview
        port = free_port()
        self.settings = {
            "kivicare.base_url": self.kstate["base_url"], "kivicare.username": self.kstate["username"],
            "kivicare.app_password": self.kstate["app_password"],
            **{f"google.{k}": self.gstate[k] for k in ("client_id", "client_secret", "auth_uri", "token_uri",
                                                        "revoke_uri", "api_endpoint")},
            "database.url": f"sqlite:///{self.workdir}/sidecar.db",
            "security.key_file": str(self.workdir / "sidecar.key"),
            "web.host": "127.0.0.1", "web.port": port, "web.public_url": f"http://127.0.0.1:{port}",
            "bridge.poll_seconds": POLL_SECONDS, "sync.telemedicine_services": [VIDEO],
            **self.extra,
        }
        self.runtime = Runtime(Config(None, environ={}, overrides=self.settings))
        for doctor, email in zip(self.seeded["doctors"], self.seeded["emails"]):
            self.google.call(_method, "auto_approve", email)
            answer = requests.get(authorization_url(self.runtime.cfg, self.runtime.box, doctor),
                                  allow_redirects=False, timeout=30)
            query = parse_qs(urlparse(answer.headers["Location"]).query)
            who, credentials = finish_authorization(self.runtime.cfg, self.runtime.box, state=query["state"][0],
                                                    code=query["code"][0])
            connection = complete_authorization(self.runtime, who, credentials)
            connection = choose_calendar(self.runtime, connection, self.calendars[email])
            preview.confirm(self.runtime, connection, by="perf")
        self.google.call(_method, "auto_approve", None)
        self.reset_requests()

    def start_sidecar(self) -> Sidecar:
        """``python -m sidecar serve`` with ``settings``; its log is ``workdir/sidecar.log``."""
        self.sidecar = Sidecar(sidecar_env(self.settings, self.workdir), self.workdir / "sidecar.log",
                               int(self.settings["web.port"]))
        self.sidecar.start()
        return self.sidecar

    def stop(self) -> None:
        if self.sidecar is not None:
            self.sidecar.stop()
            self.sidecar = None
        for remote in (self.google, self.kivicare):
            try:
                remote.stop()
            except Exception:  # noqa: BLE001 - already gone
                pass
