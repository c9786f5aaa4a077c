"""The unattended loop: start checks, polling on its own, waking up when asked."""

import time

from wp_bridge.loop import BridgeLoop

from .conftest import ANNA, connect
from .test_sync_engine import GENERAL, at, mapping_id, our_events


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_loop_syncs_new_appointments_without_being_asked(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.poll_seconds": 1})
    connection = connect(runtime, google, ANNA)
    loop = BridgeLoop(runtime, workers=2)
    loop.start()
    try:
        appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(9, 8, 10),
                                                     service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
        assert wait_for(lambda: len(our_events(google, connection.calendar_id, appointment_id)) == 1)
        assert runtime.get_state("template_imported") is True  # start checks ran
    finally:
        loop.stop()


def test_loop_refuses_to_sync_while_the_google_meet_addon_is_active(runtime, kivicare, google):
    connect(runtime, google, ANNA)
    kivicare.set_addon("googlemeet", True)
    google.reset_requests()
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: runtime.get_state("refused"))
        assert "Google Meet add-on" in runtime.get_state("refused")
        time.sleep(1)
        assert not [r for r in google.requests if "/events" in r["path"]]
    finally:
        loop.stop()
