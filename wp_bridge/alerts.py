"""Alert e-mails through the companion plugin's mail relay (``POST /wp-json/kc-sidecar/v1/mail``).

Sent when a doctor's Google connection needs reconnecting (to the doctor and the admins in
``alerts.recipients``) and when a job is given up after repeated failures (to the admins). Each
alert goes out once per cause (``remember_once``), not on every retry. The text carries ids and
what to do next, never patient data. Without the plugin, alerts are only on the dashboard.
"""

from __future__ import annotations

import logging

from .companion import CompanionError
from .synclog import log_sync

log = logging.getLogger(__name__)

ONCE_PER = 24 * 3600  # the same alert again at most once a day


def send_alert(runtime, key: str, subject: str, text: str, *, doctor_email: str = "") -> bool:
    """E-mail ``subject``/``text`` to the admins (and the doctor). Returns True when the relay took it."""
    recipients = [r for r in runtime.cfg.get("alerts.recipients") if isinstance(r, str) and "@" in r]
    if doctor_email:
        recipients.append(doctor_email)
    companion = runtime.companion()
    if not recipients or companion is None:
        return False
    if not runtime.remember_once("alert", key, ONCE_PER):
        return False
    try:
        companion.send_mail(sorted(set(recipients)), subject, text)
    except CompanionError as exc:
        log.warning("alert e-mail not sent: %s", exc)
        log_sync("alert", "error", error=exc, message=f"Alert e-mail not sent: {subject}")
        return False
    log_sync("alert", "ok", message=subject)
    return True


def needs_reconnect(runtime, doctor_id: int, doctor_name: str, doctor_email: str) -> bool:
    public_url = runtime.cfg.get("web.public_url").rstrip("/")
    return send_alert(
        runtime, f"reconnect:{doctor_id}", "Google Calendar needs reconnecting",
        f"Google no longer accepts the calendar connection of {doctor_name or 'doctor ' + str(doctor_id)}. "
        f"Appointments are kept and will be sent as soon as the connection is renewed.\n\n"
        f"Reconnect here: {public_url}/", doctor_email=doctor_email)


def job_given_up(runtime, doctor_id: int | None, appointment_id: str, error: str) -> bool:
    public_url = runtime.cfg.get("web.public_url").rstrip("/")
    return send_alert(
        runtime, f"gave-up:{appointment_id}:{doctor_id}", "Calendar sync: a change could not be sent",
        f"The sidecar gave up sending appointment {appointment_id} (doctor {doctor_id}) after repeated "
        f"failures: {error[:300]}\n\nSee the dashboard: {public_url}/")
