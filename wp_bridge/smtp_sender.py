"""Alert e-mails through the clinic's own SMTP server (stdlib ``smtplib``), when one is set.

Settings ``alerts.smtp_*``: host, port, ``smtp_tls`` (``starttls`` — RFC 3207, the usual port 587;
``ssl`` — implicit TLS, RFC 8314, port 465; ``none``), optional user and password (a secret, stored
encrypted like the others), and the sender (``smtp_from``, else the user name). Certificates are
checked against the system's trust store (``ssl.create_default_context``). A password is never sent
over an unencrypted connection except to this machine (loopback).

Errors become ``SmtpError`` whose message says what to fix and never carries the password, the
message text or the server's full answer.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

TLS_MODES = ("starttls", "ssl", "none")
TIMEOUT = 20  # seconds for connecting and for each SMTP command
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SmtpError(Exception):
    """The alert could not be handed to the SMTP server; the message is safe to log and show."""


@dataclass(frozen=True)
class SmtpSettings:
    """``alerts.smtp_*`` as typed values. ``password`` is kept out of ``repr``."""

    host: str
    port: int
    tls: str
    user: str
    password: str
    sender: str

    def __repr__(self) -> str:  # never print the password, even in a traceback's locals
        return f"SmtpSettings(host={self.host!r}, port={self.port}, tls={self.tls!r}, user={self.user!r})"

    @classmethod
    def from_config(cls, cfg) -> "SmtpSettings | None":
        """The SMTP settings, or None when no server is set (alerts then go through the companion plugin)."""
        host = (cfg.get("alerts.smtp_host") or "").strip()
        if not host:
            return None
        user = (cfg.get("alerts.smtp_user") or "").strip()
        sender = (cfg.get("alerts.smtp_from") or "").strip() or (user if "@" in user else "")
        try:
            port = int(cfg.get("alerts.smtp_port"))
        except (TypeError, ValueError):  # reported by problem(), not raised into the engine
            port = 0
        return cls(host=host, port=port, tls=(cfg.get("alerts.smtp_tls") or "").strip().lower(),
                   user=user, password=cfg.get("alerts.smtp_password") or "", sender=sender)

    def problem(self) -> str:
        """"" when these settings can be used, else a sentence naming the setting to fix."""
        if self.tls not in TLS_MODES:
            return f"alerts.smtp_tls must be one of {', '.join(TLS_MODES)}."
        if not 0 < self.port < 65536:
            return "alerts.smtp_port must be a port number (1-65535)."
        if not valid_address(self.sender):
            return "Set alerts.smtp_from to the address alerts are sent from."
        if self.user and self.tls == "none" and self.host not in _LOOPBACK:
            return "The SMTP password would travel unencrypted: choose starttls or ssl in alerts.smtp_tls."
        return ""


def valid_address(address: str) -> bool:
    """A plain ``local@domain`` address with no spaces or line breaks (no header injection)."""
    name, parsed = parseaddr(address or "")
    return (bool(parsed) and parsed == address.strip() and "@" in parsed and not any(c.isspace() for c in parsed)
            and not parsed.startswith("@") and not parsed.endswith("@"))


def build_message(sender: str, recipients: list[str], subject: str, text: str) -> EmailMessage:
    """A plain-text UTF-8 message with Date and Message-ID (RFC 5322)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    return message


def send(settings: SmtpSettings, recipients: list[str], subject: str, text: str) -> None:
    """Hand one message to the SMTP server. Raises SmtpError (bad settings, refused sign-in, server down)."""
    problem = settings.problem()
    if problem:
        raise SmtpError(problem)
    recipients = [r for r in recipients if valid_address(r)]
    if not recipients:
        raise SmtpError("No valid recipient address.")
    message = build_message(settings.sender, recipients, subject, text)
    context = ssl.create_default_context()
    try:
        if settings.tls == "ssl":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=TIMEOUT, context=context)
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=TIMEOUT)
        with client:
            if settings.tls == "starttls":
                client.starttls(context=context)
            if settings.user:
                client.login(settings.user, settings.password)
            client.send_message(message, from_addr=settings.sender, to_addrs=recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpError(f"The SMTP server refused the user name or password (code {exc.smtp_code}).") from None
    except smtplib.SMTPNotSupportedError:
        raise SmtpError("The SMTP server does not offer STARTTLS or sign-in; check alerts.smtp_tls and the port.") \
            from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise SmtpError(f"The SMTP server refused {len(exc.recipients)} recipient(s).") from None
    except smtplib.SMTPResponseException as exc:
        raise SmtpError(f"The SMTP server answered {exc.smtp_code}; the alert was not accepted.") from None
    except ssl.SSLError as exc:
        raise SmtpError(f"TLS with the SMTP server failed ({exc.reason or type(exc).__name__}); check "
                        f"alerts.smtp_tls, the port and the server's certificate.") from None
    except (smtplib.SMTPException, socket.timeout, OSError) as exc:
        raise SmtpError(f"The SMTP server {settings.host}:{settings.port} could not be reached "
                        f"({type(exc).__name__}).") from None


__all__ = ["SmtpError", "SmtpSettings", "TLS_MODES", "send", "build_message", "valid_address"]
