"""Config precedence, the key file, encrypted settings, migrations, job queue semantics."""

import os
import stat
from datetime import timedelta

import pytest

from sidecar.config import Config, ConfigError
from sidecar.crypto import SecretBox, SecretError, mask
from sidecar.settings_store import SettingsStore
from sidecar.storage import open_database
from sidecar.storage.migrations import current_version, migrate
from sidecar.storage.models import Job, SettingRow, utcnow


@pytest.fixture
def db(tmp_path):
    return open_database(f"sqlite:///{tmp_path}/t.db")


def test_precedence_environment_then_ini_then_page_then_default(tmp_path, db):
    ini = tmp_path / "config.ini"
    ini.write_text("[bridge]\npoll_seconds = 45\nhorizon_days =\n[kivicare]\napp_password = from-ini\n")
    cfg = Config(ini, environ={"SIDECAR_BRIDGE_WORKERS": "7"})
    cfg.attach_store(SettingsStore(SecretBox(tmp_path / "key")))
    assert cfg.get("bridge.workers") == 7 and cfg.source("bridge.workers") == "environment"
    assert cfg.get("bridge.poll_seconds") == 45 and cfg.is_fixed("bridge.poll_seconds")
    assert cfg.get("bridge.horizon_days") == 90 and cfg.source("bridge.horizon_days") == "default"
    cfg.set("bridge.horizon_days", 30)
    assert cfg.get("bridge.horizon_days") == 30 and cfg.source("bridge.horizon_days") == "settings page"
    with pytest.raises(ConfigError):
        cfg.set("bridge.poll_seconds", 10)
    # A secret from config.ini is used but never written to the database.
    assert cfg.get("kivicare.app_password") == "from-ini"
    assert not SettingRow.select().where(SettingRow.key == "kivicare.app_password").exists()


def test_bad_values_are_clear_errors(tmp_path):
    cfg = Config(None, environ={"SIDECAR_BRIDGE_POLL_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="SIDECAR_BRIDGE_POLL_SECONDS"):
        cfg.get("bridge.poll_seconds")


def test_key_file_is_0600_and_secrets_are_encrypted_at_rest(tmp_path, db):
    box = SecretBox(tmp_path / "sub" / "sidecar.key")
    assert stat.S_IMODE(os.stat(tmp_path / "sub" / "sidecar.key").st_mode) == 0o600
    store = SettingsStore(box)
    store.set("google.client_secret", "GOCSPX-very-secret", secret=True)
    raw = SettingRow.get(SettingRow.key == "google.client_secret")
    assert raw.encrypted and "very-secret" not in raw.value
    assert store.get("google.client_secret") == "GOCSPX-very-secret"
    assert SecretBox(tmp_path / "sub" / "sidecar.key").decrypt(raw.value) == "GOCSPX-very-secret"
    with pytest.raises(SecretError):
        SecretBox(tmp_path / "other.key").decrypt(raw.value)
    assert mask("GOCSPX-very-secret") == "••••cret"


def test_migrations_run_once_and_sqlite_uses_wal(tmp_path, db):
    assert current_version(db) >= 1
    assert migrate(db) == []
    assert db.execute_sql("pragma journal_mode").fetchone()[0] == "wal"
    assert "kc_appointment_google_meet_mappings" in db.get_tables()


def test_job_queue_dedupes_and_keeps_changes_made_while_running(db):
    from wp_bridge import jobs
    jobs.enqueue("push", "push:1:1", {"appointment_id": "1"})
    jobs.enqueue("push", "push:1:1", {"appointment_id": "1"})
    assert Job.select().count() == 1
    job = jobs.claim("w1")
    assert job is not None and jobs.claim("w2") is None  # leased to one worker only
    jobs.enqueue("push", "push:1:1", {"appointment_id": "1"})  # a change arrives mid-run
    jobs.complete(job)
    assert Job.get().state == "pending"  # so it runs again with the newer state
    job = jobs.claim("w1")
    jobs.complete(job)
    assert Job.get().state == "done"
    # Outages do not count as tries; permanent errors do.
    jobs.enqueue("push", "push:2:1", {})
    job = jobs.claim("w1")
    assert jobs.retry_later(job, timedelta(0), "down", counts=False) == 0
    job = jobs.claim("w1")
    assert jobs.retry_later(job, timedelta(0), "bad", counts=True) == 1


def test_dead_worker_leases_are_released_at_start(db):
    from wp_bridge import jobs
    jobs.enqueue("push", "push:3:1", {})
    Job.update(state="running", locked_by=f"{jobs.HOST}:999999:worker-0",
               locked_until=utcnow() + timedelta(hours=1)).execute()
    assert jobs.claim("w") is None
    assert jobs.release_dead_leases() == 1
    assert jobs.claim("w") is not None
