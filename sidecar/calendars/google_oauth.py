"""Connecting a doctor's Google account: OAuth 2.0 authorization code flow with PKCE.

google-auth-oauthlib's ``Flow`` (NOTES.md "OAuth flow against a local server"): ``access_type=offline``
and ``prompt=consent`` so Google issues a refresh token; ``state`` and the PKCE ``code_verifier``
are kept server-side (``oauth_states``, verifier encrypted), because a new Flow in the callback
without the verifier fails with "Missing code verifier". Granular consent is allowed by the
library (``OAUTHLIB_RELAX_TOKEN_SCOPE``) and then checked here: missing scopes are an error the
doctor can fix by reconnecting.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from urllib.parse import urlparse

from google_auth_oauthlib.flow import Flow
from google.oauth2.credentials import Credentials

from ..config import Config
from ..crypto import SecretBox
from ..storage.models import OAuthState, utcnow
from .google import REQUIRED_SCOPES

STATE_TTL = timedelta(minutes=30)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class OAuthError(Exception):
    """The authorization did not complete; the message is safe to show to the doctor."""


def _prepare_environment(cfg: Config) -> None:
    # Google may grant fewer scopes than asked; we check them ourselves (NOTES.md 3.2 #1).
    os.environ["OAUTHLIB_RELAX_TOKEN_SCOPE"] = "1"
    # Plain http is allowed only for loopback endpoints (the sandbox, a developer's machine).
    hosts = {urlparse(cfg.get("google.token_uri")).hostname, urlparse(cfg.get("google.auth_uri")).hostname,
             urlparse(cfg.redirect_uri).hostname}
    if hosts <= _LOOPBACK:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


def _flow(cfg: Config, **kwargs) -> Flow:
    if not cfg.get("google.client_id") or not cfg.get("google.client_secret"):
        raise OAuthError("Google is not configured yet: the admin must enter the OAuth client ID and secret.")
    _prepare_environment(cfg)
    return Flow.from_client_config(cfg.google_client_config(), scopes=list(REQUIRED_SCOPES),
                                   redirect_uri=cfg.redirect_uri, **kwargs)


def authorization_url(cfg: Config, box: SecretBox, doctor_id: int, login_hint: str | None = None) -> str:
    """Start connecting ``doctor_id``: store state + verifier, return Google's consent URL."""
    flow = _flow(cfg)
    state = secrets.token_urlsafe(32)
    extra = {"login_hint": login_hint} if login_hint else {}
    url, _ = flow.authorization_url(access_type="offline", prompt="consent", include_granted_scopes="true",
                                    state=state, **extra)
    OAuthState.delete().where(OAuthState.created_at < utcnow() - STATE_TTL).execute()
    OAuthState.create(state=state, code_verifier=box.encrypt(flow.code_verifier), doctor_id=doctor_id)
    return url


def finish_authorization(cfg: Config, box: SecretBox, *, state: str, code: str | None,
                         error: str | None = None) -> tuple[int, Credentials]:
    """Exchange the code from Google's redirect. Returns ``(doctor_id, credentials)``.

    Raises OAuthError for a denied consent, an unknown or expired state, a failed exchange,
    a missing refresh token, or missing scopes.
    """
    row = OAuthState.get_or_none(OAuthState.state == state) if state else None
    if row is None or row.created_at < utcnow() - STATE_TTL:
        raise OAuthError("This sign-in link has expired or was already used. Start again from the Connect page.")
    row.delete_instance()  # single use
    if error:
        raise OAuthError("Google access was not granted (%s). Click Connect to try again." % error[:50])
    if not code:
        raise OAuthError("Google did not return an authorization code. Click Connect to try again.")
    flow = _flow(cfg, state=state, code_verifier=box.decrypt(row.code_verifier), autogenerate_code_verifier=False)
    try:
        flow.fetch_token(code=code)
    except Exception as exc:  # oauthlib raises many kinds; none may leak the code or tokens
        raise OAuthError(f"Google refused the authorization ({type(exc).__name__}). "
                         "Check the client ID, secret and redirect URI in the settings.") from None
    credentials = flow.credentials
    if not credentials.refresh_token:
        raise OAuthError("Google did not issue a refresh token. Remove the app's access in your Google account "
                         "settings, then connect again.")
    granted = set(getattr(credentials, "granted_scopes", None) or credentials.scopes or [])
    missing = [s for s in REQUIRED_SCOPES if s not in granted]
    if missing:
        raise OAuthError("Calendar access was not granted. Connect again and leave the calendar "
                         "permission ticked.")
    return row.doctor_id, credentials


def revoke(cfg: Config, token: str) -> None:
    """Best effort ``POST revoke_uri?token=…`` on disconnect; failures are ignored (the grant may be gone)."""
    import requests
    try:
        requests.post(cfg.get("google.revoke_uri"), params={"token": token}, timeout=10)
    except requests.RequestException:
        pass
