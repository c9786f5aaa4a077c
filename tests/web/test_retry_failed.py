"""An admin's "Retry" for a doctor's given-up changes (issue 6 item 1): a POST button on the doctor's page,
with the CSRF token, admins only, written to the audit trail. Against the Google and KiviCare sandboxes."""

from __future__ import annotations

import pytest

from sidecar.storage.models import AuditEntry, Job
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, MARC, connect
from tests.test_reliability_limits import give_up_a_push
from tests.test_sync_engine import GENERAL, at, mapping_id, our_events

from .conftest import ADMIN, PASSWORD, admin, csrf, text_of
from .test_sso import ROLES, SECRET, signed_in

RETRY = "Retry the given-up changes now"


@pytest.fixture
def site(make_runtime, kivicare, google):
    """Anna connected and synced, the companion plugin installed, an admin, and one appointment whose push
    Google refused (a permanent 400) until it was given up: ``app.rt``, ``app.connection``, ``app.job``."""
    kivicare.install_companion(SECRET)
    runtime = make_runtime(**{"companion.secret": SECRET})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(4, 9, 30),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.poll()
    job = give_up_a_push(runtime, kivicare, google, appointment_id, connection)
    app = create_app(runtime)
    create_admin(runtime, ADMIN, PASSWORD)
    app.rt, app.connection, app.job, app.appointment_id = runtime, connection, job, appointment_id
    return app


def retry(client, page_html=None):
    data = {"csrf_token": csrf(page_html)} if page_html is not None else {}
    return client.post(f"/doctors/{ANNA}/retry-failed", data=data)


def state_of(job) -> str:
    return Job.get_by_id(job.id).state


def test_an_admin_retries_the_given_up_changes_from_the_doctors_page(site, google):
    client = admin(site)
    page = client.get(f"/doctors/{ANNA}")
    text = text_of(page.text)
    assert "1 change was given up after repeated failures" in text and RETRY in text
    assert retry(client).status_code == 400  # no CSRF token: nothing happens
    assert state_of(site.job) == "failed"
    assert not AuditEntry.select().where(AuditEntry.action == "jobs_retried").exists()
    answer = retry(client, page.text)
    assert answer.status_code == 303 and answer.headers["Location"] == f"/doctors/{ANNA}#given-up"
    after = text_of(client.get(f"/doctors/{ANNA}").text)
    assert "1 change is being tried again." in after and RETRY not in after
    assert state_of(site.job) == "pending" and Job.get_by_id(site.job.id).attempts == 0
    assert site.rt.work_available.is_set()
    [entry] = AuditEntry.select().where(AuditEntry.action == "jobs_retried")
    assert entry.target.endswith(f"(doctor {ANNA})") and entry.actor == ADMIN
    assert entry.detail == "given-up changes retried: 1"
    assert "Retried a doctor's given-up changes" in text_of(client.get("/audit").text)
    site.rt.bridge.run_due_jobs()  # the fault is gone now
    assert state_of(site.job) == "done"
    assert len(our_events(google, site.connection.calendar_id, site.appointment_id)) == 1
    # Nothing left to retry: said so, and nothing changes.
    retry(client, page.text)
    assert "There was no given-up change to try again." in text_of(client.get(f"/doctors/{ANNA}").text)
    assert client.post(f"/doctors/{MARC}/retry-failed", data={"csrf_token": csrf(page.text)}).status_code == 404


def test_only_admins_may_retry_given_up_changes(site):
    doctor, _ = signed_in(site, ROLES["doctor"], uid=ANNA)
    page = doctor.get("/me")
    text = text_of(page.text)
    assert "1 change was given up after repeated failures" in text and RETRY not in text  # shown, not offered
    assert retry(doctor, page.text).status_code == 403
    desk, _ = signed_in(site, ROLES["receptionist"], uid=2, name="Claire Martin")
    assert retry(desk, desk.get("/").text).status_code == 403
    assert state_of(site.job) == "failed"
    assert not AuditEntry.select().where(AuditEntry.action == "jobs_retried").exists()
