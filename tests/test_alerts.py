"""Alert e-mails go out once, through an SMTP server when one is set (a real aiosmtpd server on loopback,
STARTTLS or implicit TLS with a certificate the client checks), else the companion plugin's mail
relay; never with patient data or a secret in them or in the log."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.storage.models import SyncLog
from wp_bridge import alerts
from wp_bridge.smtp_sender import SmtpError, SmtpSettings, send

from .conftest import ANNA, EMAILS, connect
from .test_sync_engine import GENERAL, at, mapping_id

SECRET = "alerts-companion-secret-0123456789abcdef"
SMTP_USER, SMTP_PASSWORD = "alerts@clinic.test", "smtp-pass-9f8e7d6c5b4a"


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


# ---- a real SMTP server on loopback -------------------------------------------------------------

class Inbox:
    """aiosmtpd handler: keeps what arrives, with how it arrived."""

    def __init__(self):
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append({"from": envelope.mail_from, "to": sorted(envelope.rcpt_tos),
                              "text": envelope.content.decode("utf-8", "replace"),
                              "tls": server.transport.get_extra_info("ssl_object") is not None,
                              "user": session.auth_data})
        return "250 Message accepted"


def _check_login(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    """A self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE (the system trust store's
    own override), so the client's normal certificate check passes for this server only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture
def smtp_server(certificate):
    """``smtp_server(mode) -> (inbox, port)``: STARTTLS with sign-in required, or implicit TLS ("ssl")."""
    started = []

    def start(mode: str = "starttls"):
        inbox, port = Inbox(), _free_port()
        # aiosmtpd does not count implicit TLS as TLS for AUTH; the inbox records that the session was TLS.
        tls = {"tls_context": certificate, "require_starttls": True, "auth_require_tls": True} \
            if mode == "starttls" else {"ssl_context": certificate, "auth_require_tls": False}
        controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=_check_login,
                                auth_required=True, **tls)
        controller.start()
        started.append(controller)
        return inbox, port

    yield start
    for controller in started:
        controller.stop()


def smtp_settings(port: int, tls: str = "starttls", **extra) -> dict:
    return {"alerts.smtp_host": "127.0.0.1", "alerts.smtp_port": port, "alerts.smtp_tls": tls,
            "alerts.smtp_user": SMTP_USER, "alerts.smtp_password": SMTP_PASSWORD,
            "alerts.smtp_from": "calendar-sync@clinic.test", **extra}


def test_smtp_is_used_when_set_and_the_alert_carries_no_patient_data_or_secret(make_runtime, kivicare, google,
                                                                              smtp_server, caplog):
    inbox, port = smtp_server("starttls")
    kivicare.install_companion(SECRET)  # the relay is there too: SMTP wins when it is set
    runtime = make_runtime(**{"companion.secret": SECRET, "alerts.recipients": ["it@clinic.test"],
                              **smtp_settings(port)})
    assert alerts.transport(runtime) == "smtp"
    connect(runtime, google, ANNA)
    runtime.bridge.startup()
    google.revoke(EMAILS[ANNA])
    google.expire_access_tokens()
    with caplog.at_level(logging.INFO):  # everything the sidecar logs in production (not peewee's SQL trace)
        for hour in (8, 9):
            kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, hour, 10),
                                        service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)],
                                        description="Allergic to penicillin")
            runtime.bridge.sync_once()
    assert len(inbox.messages) == 1  # once per cause
    mail = inbox.messages[0]
    assert mail["tls"] and mail["user"] == SMTP_USER
    assert mail["from"] == "calendar-sync@clinic.test"
    assert mail["to"] == ["anna.schmidt@riverside-clinic.test", "it@clinic.test"]
    assert "Subject: Google Calendar needs reconnecting" in mail["text"] and "reconnect" in mail["text"].lower()
    assert f"/doctors/{ANNA}" in mail["text"]
    for private in ("Louis", "Bernard", "penicillin", "patients.test", SMTP_PASSWORD, SECRET):
        assert private not in mail["text"], private
        assert private not in caplog.text, private
    assert not [m for m in kivicare.companion.mails if m["kind"] == "relay"]
    assert SyncLog.get(SyncLog.action == "alert").outcome == "ok"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_and_a_test_message(make_runtime, smtp_server):
    inbox, port = smtp_server("ssl")
    runtime = make_runtime(**smtp_settings(port, "ssl", **{"alerts.smtp_from": ""}))  # from: the user name
    alerts.send_test_alert(runtime, "it@clinic.test")
    assert inbox.messages[0]["tls"] and inbox.messages[0]["from"] == SMTP_USER
    assert "Subject: Calendar sync: test alert" in inbox.messages[0]["text"]


def test_refused_password_unreachable_server_and_untrusted_certificate_fail_clearly(make_runtime, smtp_server,
                                                                                  caplog, monkeypatch):
    _, port = smtp_server("starttls")
    wrong = make_runtime(**smtp_settings(port, **{"alerts.smtp_password": "not-the-password-123",
                                                  "alerts.recipients": ["it@clinic.test"]}))
    with caplog.at_level(logging.INFO):
        assert alerts.job_given_up(wrong, ANNA, "501", "CalendarUnavailable: down") is False
    row = SyncLog.get(SyncLog.action == "alert")
    assert row.outcome == "error" and row.error_class == "SmtpError"
    assert "refused the user name or password" in row.message
    assert "not-the-password-123" not in caplog.text + row.message

    closed = SmtpSettings.from_config(make_runtime(**smtp_settings(_free_port())).cfg)
    with pytest.raises(SmtpError, match="could not be reached"):
        send(closed, ["it@clinic.test"], "s", "t")

    monkeypatch.delenv("SSL_CERT_FILE")  # the server's certificate is no longer trusted
    with pytest.raises(SmtpError, match="TLS with the SMTP server failed"):
        send(SmtpSettings.from_config(wrong.cfg), ["it@clinic.test"], "s", "t")


def test_smtp_settings_are_checked_before_anything_is_sent(make_runtime):
    def problem(**values):
        return SmtpSettings.from_config(make_runtime(**smtp_settings(2525, **values)).cfg).problem()

    assert problem() == ""
    assert "alerts.smtp_tls" in problem(**{"alerts.smtp_tls": "tls1.3"})
    assert "alerts.smtp_from" in problem(**{"alerts.smtp_from": "", "alerts.smtp_user": "alerts"})
    assert "alerts.smtp_from" in problem(**{"alerts.smtp_from": "x@y.test\r\nBcc: evil@x.test"})
    assert "unencrypted" in problem(**{"alerts.smtp_tls": "none", "alerts.smtp_host": "smtp.example.com"})
    assert problem(**{"alerts.smtp_tls": "none"}) == ""  # loopback: a local relay
    assert "alerts.smtp_port" in problem(**{"alerts.smtp_port": "smtp"})
    assert "alerts.smtp_port" in problem(**{"alerts.smtp_port": 70000})
    assert SMTP_PASSWORD not in repr(SmtpSettings.from_config(make_runtime(**smtp_settings(2525)).cfg))
    assert SmtpSettings.from_config(make_runtime().cfg) is None  # no host: the companion plugin's relay
