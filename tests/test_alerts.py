"""Alert e-mails go out once, through the companion plugin's mail relay, with no patient data."""

from .conftest import ANNA, EMAILS, connect
from .test_sync_engine import GENERAL, at, mapping_id

SECRET = "alerts-companion-secret-0123456789abcdef"


def test_a_revoked_grant_alerts_the_doctor_and_the_admins_once(make_runtime, kivicare, google):
    kivicare.install_companion(SECRET)
    runtime = make_runtime(**{"companion.secret": SECRET, "alerts.recipients": ["it@clinic.test"]})
    connect(runtime, google, ANNA)
    runtime.bridge.startup()
    google.revoke(EMAILS[ANNA])
    google.expire_access_tokens()
    for hour in (8, 9):
        kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, hour, 10),
                                    service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
        runtime.bridge.sync_once()
    mails = [m for m in kivicare.companion.mails if m["kind"] == "relay"]
    assert len(mails) == 1
    assert sorted(mails[0]["to"]) == ["anna.schmidt@riverside-clinic.test", "it@clinic.test"]
    assert "reconnect" in mails[0]["text"].lower() and "Louis" not in mails[0]["text"]
