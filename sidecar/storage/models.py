"""Peewee models: what the sidecar remembers between runs.

Times are stored as naive UTC and handed out as aware UTC datetimes (``UTCDateTimeField``);
conversion to a doctor's or the clinic's timezone happens only at the edges.
Tables are created and changed by ``sidecar.storage.migrations`` only.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import peewee

from .db import database


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTimeField(peewee.DateTimeField):
    """Stores naive UTC; accepts and returns aware UTC datetimes. Naive input is refused."""

    def db_value(self, value):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC field; attach a timezone first")
        return super().db_value(value.astimezone(timezone.utc).replace(tzinfo=None))

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JSONTextField(peewee.TextField):
    """JSON kept as text, so it works the same on SQLite, PostgreSQL and MySQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """Which migrations have run (one row per applied version)."""

    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "schema_version"


class SettingRow(BaseModel):
    """A value entered in the settings page. ``encrypted`` values are Fernet tokens."""

    key = peewee.CharField(max_length=100, primary_key=True)
    value = peewee.TextField(null=True)
    encrypted = peewee.BooleanField(default=False)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "settings"


class AdminUser(BaseModel):
    """A local account for the sidecar's pages (first setup, sites without the companion plugin)."""

    username = peewee.CharField(max_length=150, unique=True)
    password_hash = peewee.CharField(max_length=255)
    created_at = UTCDateTimeField(default=utcnow)
    last_login_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "admin_users"


class OneTimeToken(BaseModel):
    """A one-time link: the first-run setup link, or a doctor's Connect link (valid 7 days).

    Only the SHA-256 of the token is stored, so a database leak does not leak usable links.
    """

    token_hash = peewee.CharField(max_length=64, primary_key=True)
    purpose = peewee.CharField(max_length=20)  # "setup" | "connect"
    doctor_id = peewee.IntegerField(null=True)
    created_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()
    used_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "one_time_tokens"


class OAuthState(BaseModel):
    """An OAuth authorization in progress: ``state`` and the PKCE verifier, kept server-side."""

    state = peewee.CharField(max_length=128, primary_key=True)
    code_verifier = peewee.TextField()  # encrypted
    doctor_id = peewee.IntegerField()
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "oauth_states"


class Doctor(BaseModel):
    """A KiviCare doctor (id = WordPress user id), cached from ``GET /doctors`` and ``GET /doctors/{id}``."""

    id = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=255, default="")
    email = peewee.CharField(max_length=255, default="")
    timezone = peewee.CharField(max_length=64, null=True)  # None: the site's timezone
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "doctors"


class Connection(BaseModel):
    """A doctor's calendar account: one per doctor and provider.

    ``state``: ``pending`` (authorized, no calendar chosen yet), ``active``, ``needs_reconnect``
    (Google refused the refresh token or scopes are missing; jobs are kept), ``disconnected``.
    """

    doctor = peewee.ForeignKeyField(Doctor, backref="connections", on_delete="CASCADE")
    provider = peewee.CharField(max_length=20, default="google")
    account_email = peewee.CharField(max_length=255, default="")
    refresh_token = peewee.TextField(null=True)  # encrypted
    access_token = peewee.TextField(null=True)  # encrypted
    token_expiry = UTCDateTimeField(null=True)
    scopes = peewee.TextField(default="")  # space-separated, as granted
    calendar_id = peewee.CharField(max_length=1024, null=True)
    calendar_name = peewee.CharField(max_length=255, default="")
    calendar_timezone = peewee.CharField(max_length=64, null=True)
    state = peewee.CharField(max_length=20, default="pending")
    busy_calendars = JSONTextField(null=True)  # calendar ids whose busy time blocks booking; None = destination
    last_error = peewee.TextField(default="")
    last_sync_at = UTCDateTimeField(null=True)
    synced_count = peewee.IntegerField(default=0)
    failed_count = peewee.IntegerField(default=0)
    # None: the first sync (or the sync after a reset) waits until someone confirms its preview
    # (wp_bridge.preview); nothing is written to Google or KiviCare for this connection meanwhile.
    sync_confirmed_at = UTCDateTimeField(null=True)
    sync_confirmed_by = peewee.CharField(max_length=150, default="")
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "calendar_connections"
        indexes = ((("doctor", "provider"), True),)

    @property
    def awaiting_confirmation(self) -> bool:
        """True while the first sync (or the sync after a reset) waits for its preview to be confirmed."""
        return self.sync_confirmed_at is None


class Appointment(BaseModel):
    """The last state of a KiviCare appointment the sidecar saw (``GET /appointments`` + ``/{id}``).

    ``data`` holds the parsed appointment (see ``wp_bridge.models.Appointment.to_dict``);
    ``list_hash`` fingerprints the list row so the detail is fetched only when the row changes.
    """

    id = peewee.CharField(max_length=32, primary_key=True)
    doctor_id = peewee.IntegerField(index=True)
    start_utc = UTCDateTimeField(index=True)
    end_utc = UTCDateTimeField()
    status = peewee.IntegerField()
    list_hash = peewee.CharField(max_length=64)
    data = JSONTextField()
    present = peewee.BooleanField(default=True)  # False once KiviCare confirmed the deletion (404)
    changed_at = UTCDateTimeField(null=True)  # when the sidecar saw KiviCare's latest change (conflict rule)
    first_seen_at = UTCDateTimeField(default=utcnow)
    last_seen_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "kc_appointments"


class RejectedRow(BaseModel):
    """A KiviCare row that could not be parsed; remembered so it is logged once, not on every poll."""

    appointment_id = peewee.CharField(max_length=64, primary_key=True)
    row_hash = peewee.CharField(max_length=64)
    error = peewee.TextField()
    first_seen_at = UTCDateTimeField(default=utcnow)
    last_seen_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "kc_rejected_rows"


class MeetMapping(BaseModel):
    """One Google event per (appointment, calendar): the mapping table the Meet add-on also names.

    ``pushed_hash`` is the hash of the event body last confirmed by Google (echo and no-op guard).
    ``conference_status``: "", "pending", "success" or "failure". ``state``: "active" or "deleted".
    """

    appointment_id = peewee.CharField(max_length=32, index=True)
    doctor_id = peewee.IntegerField(index=True)
    connection = peewee.ForeignKeyField(Connection, backref="mappings", null=True, on_delete="SET NULL")
    calendar_id = peewee.CharField(max_length=1024)
    event_id = peewee.CharField(max_length=1024)
    etag = peewee.CharField(max_length=255, default="")
    hangout_link = peewee.CharField(max_length=1024, default="")
    conference_status = peewee.CharField(max_length=20, default="")
    conference_request = peewee.CharField(max_length=100, default="")  # createRequest.requestId last sent
    pushed_hash = peewee.CharField(max_length=64, default="")
    pushed_body = JSONTextField(null=True)  # the fields we last wrote; later patches send only changes
    google_updated = UTCDateTimeField(null=True)
    state = peewee.CharField(max_length=20, default="active")
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "kc_appointment_google_meet_mappings"
        indexes = ((("appointment_id", "calendar_id"), True),)


class PendingWrite(BaseModel):
    """Google writes for one (appointment, calendar) sent but not yet confirmed in the mapping table.

    Committed before each insert, patch or delete and removed in the transaction that records Google's
    answer, so it survives a lost answer or a SIGKILL between the call and the commit. ``sent`` lists
    what went out since the last confirmed write, oldest first: ``{"op": "write", "body": {fields we
    own}}`` or ``{"op": "delete"}``. A pull that finds one of them in Google knows it is our own write
    coming back (DESIGN invariant 4); a removal with no mapping deletes ``event_id`` in case an insert
    landed unseen (invariant 1).
    """

    appointment_id = peewee.CharField(max_length=32, index=True)
    connection = peewee.ForeignKeyField(Connection, null=True, on_delete="CASCADE")
    calendar_id = peewee.CharField(max_length=1024)
    event_id = peewee.CharField(max_length=1024)
    sent = JSONTextField(default=list)
    started_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "pending_writes"
        indexes = ((("appointment_id", "calendar_id"), True),)


class Job(BaseModel):
    """A durable unit of work (the outbox). One row per ``dedupe_key``; re-enqueueing bumps ``generation``.

    ``state``: pending, running, done, failed (gave up; shown to the admin). A worker marks a job done
    only if ``generation`` did not change while it ran, so a change that arrives mid-run is not lost.
    """

    kind = peewee.CharField(max_length=40)
    dedupe_key = peewee.CharField(max_length=255, unique=True)
    payload = JSONTextField(default=dict)
    state = peewee.CharField(max_length=20, default="pending", index=True)
    generation = peewee.IntegerField(default=1)
    attempts = peewee.IntegerField(default=0)  # counted failures (permanent errors), bounded
    retries = peewee.IntegerField(default=0)  # every retry, outages included; drives the backoff
    run_after = UTCDateTimeField(default=utcnow, index=True)
    locked_by = peewee.CharField(max_length=64, default="")
    locked_until = UTCDateTimeField(null=True)
    last_error = peewee.TextField(default="")
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "jobs"


class SyncLog(BaseModel):
    """What the sidecar did, for the dashboard and the log page. Ids and outcomes only: no patient data."""

    at = UTCDateTimeField(default=utcnow, index=True)
    doctor_id = peewee.IntegerField(null=True, index=True)
    appointment_id = peewee.CharField(max_length=32, default="")
    direction = peewee.CharField(max_length=20, default="kivicare→google")
    action = peewee.CharField(max_length=40)
    outcome = peewee.CharField(max_length=20)  # ok | retry | error | skipped
    error_class = peewee.CharField(max_length=100, default="")
    message = peewee.TextField(default="")

    class Meta:
        table_name = "sync_log"
        # The log page's "failed or retrying" filter and the dashboard's error counts (newest first).
        indexes = ((("outcome", "at"), False),)


class SyncCursor(BaseModel):
    """Per connection and calendar: Google's syncToken and the push channel watching it."""

    connection = peewee.ForeignKeyField(Connection, backref="cursors", on_delete="CASCADE")
    calendar_id = peewee.CharField(max_length=1024)
    sync_token = peewee.TextField(null=True)
    full_sync_at = UTCDateTimeField(null=True)
    last_pull_at = UTCDateTimeField(null=True)
    channel_id = peewee.CharField(max_length=64, default="")
    channel_resource_id = peewee.CharField(max_length=255, default="")
    channel_token = peewee.CharField(max_length=255, default="")
    channel_expiration = UTCDateTimeField(null=True)

    class Meta:
        table_name = "sync_cursors"
        indexes = ((("connection", "calendar_id"), True),)


class BusyBlock(BaseModel):
    """A Google event that makes the doctor busy (served to KiviCare's slot generator by the plugin)."""

    connection = peewee.ForeignKeyField(Connection, backref="busy_blocks", on_delete="CASCADE")
    doctor_id = peewee.IntegerField(index=True)
    calendar_id = peewee.CharField(max_length=1024)
    event_id = peewee.CharField(max_length=1024)
    start_utc = UTCDateTimeField(index=True)
    end_utc = UTCDateTimeField()
    name = peewee.CharField(max_length=255, default="Busy")

    class Meta:
        table_name = "busy_blocks"
        indexes = ((("connection", "calendar_id", "event_id"), True),)


class Conflict(BaseModel):
    """A change the sidecar will not decide alone: both sides changed (manual rule), a move without the
    companion plugin, a refused reschedule, or a pull that would cancel too many appointments at once.

    ``kivicare`` and ``google`` hold both versions side by side (times UTC ISO, status, title).
    ``state``: open, resolved. ``resolution``: kivicare, google, dismissed.
    """

    kind = peewee.CharField(max_length=40)
    doctor_id = peewee.IntegerField(null=True, index=True)
    appointment_id = peewee.CharField(max_length=32, default="", index=True)
    connection = peewee.ForeignKeyField(Connection, null=True, on_delete="SET NULL")
    kivicare = JSONTextField(default=dict)
    google = JSONTextField(default=dict)
    message = peewee.TextField(default="")
    state = peewee.CharField(max_length=20, default="open", index=True)
    resolution = peewee.CharField(max_length=20, default="")
    created_at = UTCDateTimeField(default=utcnow)
    resolved_at = UTCDateTimeField(null=True)
    resolved_by = peewee.CharField(max_length=150, default="")

    class Meta:
        table_name = "conflicts"


class SeenKey(BaseModel):
    """Keys that may be used once (SSO token ids): ``kind`` + ``key`` until ``expires_at``."""

    kind = peewee.CharField(max_length=40)
    key = peewee.CharField(max_length=255)
    expires_at = UTCDateTimeField(index=True)

    class Meta:
        table_name = "seen_keys"
        primary_key = peewee.CompositeKey("kind", "key")


class AuditEntry(BaseModel):
    """An admin action, for the audit trail page (``/audit``): who did what to which setting or doctor.

    ``actor`` is the signed-in person's name ("" = nobody signed in, e.g. a failed sign-in), ``role``
    their role; ``target`` names the setting, doctor or conflict; ``detail`` never holds a secret's value.
    """

    at = UTCDateTimeField(default=utcnow, index=True)
    actor = peewee.CharField(max_length=150, default="")
    role = peewee.CharField(max_length=20, default="")
    action = peewee.CharField(max_length=40, index=True)
    target = peewee.CharField(max_length=255, default="")
    detail = peewee.TextField(default="")
    ip = peewee.CharField(max_length=45, default="")

    class Meta:
        table_name = "audit_log"


ALL_MODELS = (SchemaVersion, SettingRow, AdminUser, OneTimeToken, OAuthState, Doctor, Connection,
              Appointment, RejectedRow, MeetMapping, PendingWrite, Job, SyncLog, SeenKey, SyncCursor, BusyBlock,
              Conflict, AuditEntry)
