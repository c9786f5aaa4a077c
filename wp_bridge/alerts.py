"""Alert e-mails: through the clinic's SMTP server when one is set, else the companion plugin's relay.

Sent when a doctor's Google connection needs reconnecting (to the doctor and the admins in
``alerts.recipients``) and when a job is given up after repeated failures (to the admins, once per
give-up). Each alert goes out once per cause (``remember_once``), not on every retry. The text carries ids and
what to do next, never patient data. Transports: ``wp_bridge.smtp_sender`` (``alerts.smtp_host``
set) or ``POST /wp-json/kc-sidecar/v1/mail`` on the companion plugin (the site's ``wp_mail``).
Without either, alerts are only on the dashboard.
"""

from __future__ import annotations

import logging

from .companion import CompanionError
from .smtp_sender import SmtpError, SmtpSettings, send as send_smtp, valid_address
from .synclog import log_sync

log = logging.getLogger(__name__)

ONCE_PER = 24 * 3600  # seconds: the same alert again at most once a day


def transport(runtime) -> str:
    """How alerts leave now: "smtp", "relay" (companion plugin) or "" (nowhere: dashboard only)."""
    if SmtpSettings.from_config(runtime.cfg) is not None:
        return "smtp"
    return "relay" if runtime.companion() is not None else ""


def send_alert(runtime, key: str, subject: str, text: str, *, doctor_email: str = "") -> bool:
    """E-mail ``subject``/``text`` to the admins (and the doctor) once per ``key`` a day.

    Returns True when the SMTP server or the relay took it; False when there is no recipient or
    transport, the alert went out already, or sending failed (logged, and a sync-log "alert" error row
    saying why, without the password or the text).
    """
    recipients = [r.strip() for r in runtime.cfg.get("alerts.recipients") if isinstance(r, str) and valid_address(r)]
    if doctor_email and valid_address(doctor_email):
        recipients.append(doctor_email.strip())
    via = transport(runtime)
    if not recipients or not via:
        return False
    if not runtime.remember_once("alert", key, ONCE_PER):
        return False
    recipients = sorted(set(recipients))
    try:
        if via == "smtp":
            send_smtp(SmtpSettings.from_config(runtime.cfg), recipients, subject, text)
        else:
            runtime.companion().send_mail(recipients, subject, text)
    except (CompanionError, SmtpError) as exc:
        log.warning("alert e-mail not sent (%s): %s", via, exc)
        log_sync("alert", "error", error=exc, message=f"Alert e-mail not sent ({via}): {subject}. {exc}")
        return False
    log_sync("alert", "ok", message=f"{subject} (sent by {'SMTP' if via == 'smtp' else 'the companion plugin'})")
    return True


def send_test_alert(runtime, to: str) -> None:
    """Send a test alert to ``to`` now (for a settings page's "Send a test e-mail"), bypassing once-a-day.

    Raises SmtpError or CompanionError with a message safe to show, ValueError when ``to`` is not an
    address or no transport is set up.
    """
    if not valid_address(to):
        raise ValueError("Enter one e-mail address.")
    via = transport(runtime)
    subject, text = "Calendar sync: test alert", ("This is a test of the KiviCare Calendar Sidecar's alert e-mails. "
                                                  "Nothing needs to be done.")
    if via == "smtp":
        send_smtp(SmtpSettings.from_config(runtime.cfg), [to.strip()], subject, text)
    elif via == "relay":
        runtime.companion().send_mail([to.strip()], subject, text)
    else:
        raise ValueError("Set an SMTP server or the companion plugin first.")


def needs_reconnect(runtime, doctor_id: int, doctor_name: str, doctor_email: str) -> bool:
    """Tell the doctor and the admins that Google refused the doctor's grant. Returns ``send_alert``'s answer."""
    public_url = runtime.cfg.get("web.public_url").rstrip("/")
    return send_alert(
        runtime, f"reconnect:{doctor_id}", "Google Calendar needs reconnecting",
        f"Google no longer accepts the calendar connection of {doctor_name or 'doctor ' + str(doctor_id)}. "
        f"Appointments are kept and will be sent as soon as the connection is renewed.\n\n"
        f"Reconnect from the \"Google Calendar\" link in KiviCare, or here: {public_url}/doctors/{doctor_id}",
        doctor_email=doctor_email)


def job_given_up(runtime, doctor_id: int | None, appointment_id: str, error: str, *, occurrence: str = "") -> bool:
    """Tell the admins a change was given up after repeated failures (ids and the error's text only).

    ``occurrence`` names this give-up (the engine passes the job's id and generation): the alert goes out
    once per give-up, and again only if the job is revived and given up once more.
    """
    public_url = runtime.cfg.get("web.public_url").rstrip("/")
    return send_alert(
        runtime, f"gave-up:{appointment_id}:{doctor_id}:{occurrence}", "Calendar sync: a change could not be sent",
        f"The sidecar gave up sending appointment {appointment_id} (doctor {doctor_id}) after repeated "
        f"failures: {error[:300]}\n\nSee the dashboard: {public_url}/")
