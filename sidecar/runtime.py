"""Everything one sidecar process needs, built once from the configuration.

``Runtime(cfg)`` opens the database (running migrations), loads or creates the key file, attaches
the settings store, and hands out the KiviCare client, a Google client per connection, and the
bridge. Health notes (E2EE detected, add-on warnings, last poll error) are kept in the settings
table under ``state.*`` so the web pages and ``python -m sidecar status`` see the same thing.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime

from .calendars.google import GoogleCalendar, credentials_for
from .config import Config
from .crypto import SecretBox
from .settings_store import SettingsStore
from .storage import open_database
from .storage.models import Connection, SettingRow, utcnow

log = logging.getLogger(__name__)


class Runtime:
    """``Runtime(cfg)``: ``cfg`` a loaded ``sidecar.config.Config``. Raises peewee errors if the DB is unreachable."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.db = open_database(cfg.database_url())
        self.box = SecretBox(cfg.path("security.key_file"))
        self.store = SettingsStore(self.box)
        cfg.attach_store(self.store)
        self._kivicare = None
        self._kivicare_key = None
        self._lock = threading.Lock()
        self.poll_requested = threading.Event()
        self.work_available = threading.Event()  # wakes the loop's workers when jobs were queued
        self._bridge = None
        from .calendars.ratelimit import Buckets
        rate = float(cfg.get("google.requests_per_second"))
        # A burst of 6 s worth keeps any 60 s within Google's 600/min per user: 6r + 60r ≤ 600 for r ≤ 9.
        self.google_buckets = Buckets(rate, burst=max(1, int(rate * 6)))

    # ---- KiviCare ----------------------------------------------------------------------------------

    def kivicare(self):
        """The KiviCare client for the current settings (rebuilt when the site or credentials change)."""
        from wp_bridge.kivicare import KiviCareClient

        key = (self.cfg.get("kivicare.base_url"), self.cfg.get("kivicare.username"),
               self.cfg.get("kivicare.app_password"), self.cfg.get("kivicare.client_id"))
        with self._lock:
            if self._kivicare is None or key != self._kivicare_key:
                self._kivicare = KiviCareClient(key[0], key[1], key[2], client_id=key[3],
                                                on_encrypted=self._on_encrypted)
                self._kivicare_key = key
            return self._kivicare

    def _on_encrypted(self, event: str) -> None:
        self.set_state("e2ee", {"event": event, "at": utcnow().isoformat()})

    # ---- the companion WordPress plugin ----------------------------------------------------------------

    def companion(self):
        """The companion plugin client (``wp_bridge.companion.CompanionClient``), or None when not set up.

        None when there is no shared secret or no KiviCare URL, or the admin switched the plugin off.
        """
        from wp_bridge.companion import CompanionClient

        secret, base = self.cfg.get("companion.secret"), self.cfg.get("kivicare.base_url")
        if not (secret and base and self.cfg.get("companion.enabled")):
            return None
        key = (base, secret)
        with self._lock:
            if getattr(self, "_companion_key", None) != key:
                self._companion = CompanionClient(base, secret)
                self._companion_key = key
            return self._companion

    def remember_once(self, kind: str, key: str, ttl_seconds: int) -> bool:
        """True the first time ``(kind, key)`` is seen within ``ttl_seconds``; False on a replay."""
        import peewee
        from datetime import timedelta
        from .storage.models import SeenKey
        now = utcnow()
        SeenKey.delete().where(SeenKey.expires_at < now).execute()
        try:
            SeenKey.create(kind=kind, key=key, expires_at=now + timedelta(seconds=ttl_seconds))
        except peewee.IntegrityError:
            return False
        return True

    # ---- Google --------------------------------------------------------------------------------

    def google_for(self, connection: Connection) -> GoogleCalendar:
        """A Google client for ``connection``; refreshed access tokens are stored back encrypted.

        Cheap, so built per job: the Calendar service and the thread's connection pool are shared
        (``sidecar.calendars.google._SharedApi``, ``_thread_http``). The tokens are read from ``connection``
        each time and never cached, so a reconnect's new refresh token is used by the very next job."""
        creds = credentials_for(
            token=self.box.decrypt(connection.access_token) if connection.access_token else None,
            refresh_token=self.box.decrypt(connection.refresh_token) if connection.refresh_token else "",
            expiry=connection.token_expiry, token_uri=self.cfg.get("google.token_uri"),
            client_id=self.cfg.get("google.client_id"), client_secret=self.cfg.get("google.client_secret"),
            scopes=connection.scopes.split() if connection.scopes else [])
        connection_id = connection.id

        def store_tokens(token: str, expiry: datetime | None) -> None:
            from datetime import timezone
            Connection.update(access_token=self.box.encrypt(token),
                              token_expiry=expiry.replace(tzinfo=timezone.utc) if expiry else None,
                              updated_at=utcnow()).where(Connection.id == connection_id).execute()

        return GoogleCalendar(creds, self.cfg.get("google.api_endpoint"), on_tokens=store_tokens,
                              bucket=self.google_buckets.get(connection.account_email or str(connection_id)))

    def save_credentials(self, connection: Connection, credentials) -> None:
        """Store a fresh grant (refresh + access token encrypted, scopes, expiry) on ``connection``."""
        from datetime import timezone
        connection.refresh_token = self.box.encrypt(credentials.refresh_token)
        connection.access_token = self.box.encrypt(credentials.token) if credentials.token else None
        connection.token_expiry = credentials.expiry.replace(tzinfo=timezone.utc) if credentials.expiry else None
        granted = getattr(credentials, "granted_scopes", None) or credentials.scopes or []
        connection.scopes = " ".join(sorted(granted))
        connection.updated_at = utcnow()

    # ---- the engine ------------------------------------------------------------------------------

    @property
    def bridge(self):
        """The sync engine bound to this runtime (``wp_bridge.bridge.Bridge``)."""
        if self._bridge is None:
            from wp_bridge.bridge import Bridge
            self._bridge = Bridge(self)
        return self._bridge

    def request_poll(self) -> None:
        """Ask the running bridge loop to poll now (after a connect, a hint, a settings change)."""
        self.poll_requested.set()

    # ---- health notes ------------------------------------------------------------------------------

    def set_state(self, name: str, value) -> None:
        self.store.set(f"state.{name}", json.dumps(value))

    def get_state(self, name: str, default=None):
        row = SettingRow.get_or_none(SettingRow.key == f"state.{name}")
        if row is None or not row.value:
            return default
        try:
            return json.loads(row.value)
        except ValueError:
            return default

    def clear_state(self, name: str) -> None:
        SettingRow.delete().where(SettingRow.key == f"state.{name}").execute()
