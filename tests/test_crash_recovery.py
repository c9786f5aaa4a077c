"""Killing the sidecar between a Google write and our database commit loses and duplicates nothing.

The Google sandbox SIGKILLs a real ``python -m sidecar sync-once`` subprocess right after it stored
an insert (or a patch) and before it answers. After an insert, a second run must find the event
(409 → get + patch), not create another (DESIGN invariant 1); after a patch, the next pull must
know the change as our own write, not the doctor's (invariant 4).
"""

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sidecar.storage.models import Conflict, MeetMapping, PendingWrite

from .conftest import ANNA, connect, sandbox_settings
from .test_sync_engine import GENERAL, at, instant, mapping_id, our_events

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
    # One request per insert, so the kill lands between two of them (a batch: tests/test_batch_push.py).
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"sync.telemedicine_services": [3],
                                                                      "google.batch_size": 1}), tmp_path)

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


def test_sigkill_between_a_patch_and_its_commit_is_not_taken_for_the_doctors_move(make_runtime, kivicare, google,
                                                                                   tmp_path):
    """The patch landed in Google, the process died before recording its etag: the next pull reads our own
    write back. Under the manual rule that once opened a conflict (soak finding 4); it must be recognised."""
    settings = {"sync.conflict_rule": "manual", "sync.telemedicine_services": []}
    runtime = make_runtime(**settings)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(6, 8, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    kivicare.reschedule(appointment_id, at(6, 9, 10))

    child = run_sync_once(sidecar_env(sandbox_settings(kivicare, google, tmp_path, **settings), tmp_path))
    google.kill_on_patch(child.pid)
    output = child.communicate(timeout=60)[0].decode()
    assert child.returncode == -signal.SIGKILL, output
    [event] = our_events(google, connection.calendar_id, appointment_id)
    assert instant(event["start"]["dateTime"]) == at(6, 9, 10)  # in Google...
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).etag != event["etag"]  # ...not recorded

    runtime.bridge.startup()  # the dead worker's lease is released
    runtime.bridge.pull_all()  # the pull comes first, as after a push notification
    runtime.bridge.sync_once()
    assert Conflict.select().count() == 0
    [event] = our_events(google, connection.calendar_id, appointment_id)
    assert instant(event["start"]["dateTime"]) == at(6, 9, 10)
    assert kivicare.get_appointment(appointment_id)["start_utc"] == at(6, 9, 10)
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).etag == event["etag"]
    assert PendingWrite.select().count() == 0
