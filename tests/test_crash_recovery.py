"""Killing the sidecar between Google's insert and our database commit leaves exactly one event.

The Google sandbox SIGKILLs a real ``python -m sidecar sync-once`` subprocess right after it stored
the insert and before it answers; a second run must find the event (409 → get + patch), not
create another (DESIGN invariant 1).
"""

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sidecar.storage.models import MeetMapping

from .conftest import ANNA, connect, sandbox_settings
from .test_sync_engine import GENERAL, at, mapping_id

ROOT = Path(__file__).resolve().parents[1]


def sidecar_env(settings: dict, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["SIDECAR_CONFIG"] = str(tmp_path / "absent.ini")
    for name, value in settings.items():
        section, key = name.split(".")
        env[f"SIDECAR_{section.upper()}_{key.upper()}"] = ",".join(map(str, value)) if isinstance(value, list) \
            else str(value)
    return env


def run_sync_once(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sidecar", "sync-once"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_between_insert_and_commit_leaves_one_event(runtime, kivicare, google, tmp_path):
    connection = connect(runtime, google, ANNA)
    service = [mapping_id(runtime, ANNA, GENERAL)]
    created = [kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(7, 8 + n, 10),
                                           service_mapping_ids=service) for n in range(3)]
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"sync.telemedicine_services": [3]}), tmp_path)

    first = run_sync_once(env)
    google.kill_on_insert(first.pid)
    output = first.communicate(timeout=60)[0].decode()
    assert first.returncode == -signal.SIGKILL, output
    stored = [e for e in google.events(connection.calendar_id) if e.get("extendedProperties")]
    assert len(stored) == 1 and MeetMapping.select().count() == 0  # in Google, not yet in our database

    second = run_sync_once(env)
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, output

    per_appointment = Counter(e["extendedProperties"]["private"]["kcAppointmentId"]
                              for e in google.events(connection.calendar_id) if e.get("extendedProperties"))
    assert all(count == 1 for count in per_appointment.values()), per_appointment
    assert set(created) <= set(per_appointment)
    assert MeetMapping.select().where(MeetMapping.state == "active").count() == len(per_appointment)
