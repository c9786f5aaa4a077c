"""Web security helpers: the session secret, one-time links, admin accounts, roles, sign-in throttling.

Everything here is storage or policy; the pages live in the blueprints. One-time links (the first-run
setup link, a doctor's Connect link) are random tokens of which only the SHA-256 is stored
(``OneTimeToken``), so a copy of the database cannot be turned into a working link.

Who is signed in is a ``Principal`` with one of three roles:

- ``admin``: a local admin account (``/login``), or a WordPress administrator / KiviCare clinic admin
  signed in through the companion plugin (``/sso``): every page;
- ``doctor`` (SSO only): their own calendar page (``/me``) and their own connection (calendar choice,
  calendars that block booking time), and the conflicts about their own appointments, read-only;
- ``receptionist`` (SSO only): the dashboard and the conflicts, read-only (every POST except sign-out is
  refused).

Views say what they need with ``admin_required`` or ``roles_required(...)``; ``refuse_writes_by_role``
is a second line (a ``before_request`` hook) that lets non-admins POST only to the few endpoints
meant for them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

from flask import current_app, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from ..crypto import SecretError
from ..storage.models import AdminUser, OneTimeToken, utcnow

SECRET_KEY_NAME = "web.secret_key"
SESSION_LIFETIME = timedelta(hours=12)
SETUP_TTL = timedelta(hours=24)
CONNECT_TTL = timedelta(days=7)
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,150}$")
_dummy_hash: str | None = None


# ---- the Flask secret key -----------------------------------------------------------------------

def load_secret_key(runtime) -> str:
    """The session-signing key: generated once, kept encrypted in the settings table.

    A key that cannot be decrypted (the key file was replaced) is replaced too: every browser
    simply has to sign in again.
    """
    try:
        value = runtime.store.get(SECRET_KEY_NAME)
    except SecretError:
        value = None
    if not value:
        runtime.store.set(SECRET_KEY_NAME, secrets.token_hex(32), secret=True)
        value = runtime.store.get(SECRET_KEY_NAME)  # read back: another process may have written first
    return value


# ---- one-time links ---------------------------------------------------------------------------

def token_hash(token: str) -> str:
    """SHA-256 hex of a one-time token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(purpose: str, ttl: timedelta, doctor_id: int | None = None) -> str:
    """Create a one-time token for ``purpose`` ("setup" | "connect"); returns the token (shown once)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    OneTimeToken.delete().where(OneTimeToken.expires_at < now).execute()  # housekeeping
    OneTimeToken.create(token_hash=token_hash(token), purpose=purpose, doctor_id=doctor_id,
                        created_at=now, expires_at=now + ttl)
    return token


def valid_token(token: str | None, purpose: str) -> OneTimeToken | None:
    """The unused, unexpired ``OneTimeToken`` row for ``token`` and ``purpose``, or None."""
    if not token or len(token) > 200:
        return None
    row = OneTimeToken.get_or_none(OneTimeToken.token_hash == token_hash(token))
    if row is None or row.purpose != purpose or row.used_at is not None or row.expires_at < utcnow():
        return None
    return row


def consume_token(row: OneTimeToken) -> bool:
    """Mark ``row`` used; False if another request used it first (single use even under races)."""
    updated = (OneTimeToken.update(used_at=utcnow())
               .where((OneTimeToken.token_hash == row.token_hash) & OneTimeToken.used_at.is_null())
               .execute())
    return updated == 1


def release_token(row: OneTimeToken) -> None:
    """Undo ``consume_token`` when the step it guarded failed on our side (the link stays usable)."""
    OneTimeToken.update(used_at=None).where(OneTimeToken.token_hash == row.token_hash).execute()


# ---- admin accounts ----------------------------------------------------------------------------

def check_new_credentials(username: str, password: str) -> dict[str, str]:
    """Field name -> problem, for a username and password someone wants to use; empty when fine."""
    problems = {}
    if not _USERNAME.match(username or ""):
        problems["username"] = ("Use 1 to 150 letters, digits or . _ @ + - (no spaces).")
    if len(password or "") < MIN_PASSWORD:
        problems["password"] = f"Use at least {MIN_PASSWORD} characters."
    elif len(password) > MAX_PASSWORD:
        problems["password"] = f"Use at most {MAX_PASSWORD} characters."
    return problems


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def authenticate(username: str, password: str) -> AdminUser | None:
    """The admin whose username and password match, or None. Takes the same time for unknown users."""
    user = AdminUser.get_or_none(AdminUser.username == username) if username else None
    if user is None:
        # Check against a real scrypt hash anyway, so an unknown user costs as much as a wrong password.
        global _dummy_hash
        if _dummy_hash is None:
            _dummy_hash = hash_password(secrets.token_hex(16))
        check_password_hash(_dummy_hash, password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    return user


def password_fingerprint(user: AdminUser) -> str:
    """Changes when the password changes, so a new password signs out every other session."""
    return hashlib.sha256(user.password_hash.encode("utf-8")).hexdigest()[:16]


def admin_exists() -> bool:
    return AdminUser.select().exists()


# ---- sessions ------------------------------------------------------------------------------------

ROLES = ("admin", "doctor", "receptionist")


@dataclass(frozen=True)
class Principal:
    """Who is signed in. ``role``: admin | doctor | receptionist; ``name``: shown in the header;
    ``doctor_id``: the KiviCare doctor (= WordPress user id) for a doctor; ``via``: "local" (a local admin
    account, ``admin_id``) or "sso" (the companion plugin, ``wp_user_id``)."""

    role: str
    name: str
    via: str = "local"
    admin_id: int | None = None
    wp_user_id: int | None = None
    doctor_id: int | None = None

    @property
    def username(self) -> str:  # what the header shows next to "Sign out"
        return self.name

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_doctor(self) -> bool:
        return self.role == "doctor"

    @property
    def is_receptionist(self) -> bool:
        return self.role == "receptionist"


def start_admin_session(user: AdminUser) -> None:
    """Sign ``user`` in: a fresh session (nothing carried over from before the sign-in)."""
    session.clear()
    _request_cache().clear()  # this request may have looked before the sign-in
    session.permanent = True
    session["admin_id"] = user.id
    session["admin_pw"] = password_fingerprint(user)
    session["signed_in_at"] = int(time.time())
    AdminUser.update(last_login_at=utcnow()).where(AdminUser.id == user.id).execute()


def secret_fingerprint(secret: str) -> str:
    """Changes when the companion secret changes, so a new secret signs out every SSO session."""
    return hashlib.sha256(("sso-session\n" + (secret or "")).encode("utf-8")).hexdigest()[:16]


def _companion_secret() -> str:
    from .common import runtime
    try:
        return runtime().cfg.get("companion.secret") or ""
    except SecretError:
        return ""


def start_sso_session(*, wp_user_id: int, role: str, name: str, secret: str) -> None:
    """Sign a WordPress user in (after ``/sso`` checked the token): a fresh session with the role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    session.clear()
    _request_cache().clear()
    session.permanent = True
    session["sso"] = {"uid": int(wp_user_id), "role": role, "name": (name or "")[:100],
                      "fp": secret_fingerprint(secret)}
    session["signed_in_at"] = int(time.time())


def current_user() -> Principal | None:
    """The signed-in person for this request, or None (also when the session is too old, the local
    admin's password changed, or the companion secret changed since an SSO sign-in)."""
    cache = _request_cache()
    if "user" in cache:
        return cache["user"]
    user = None
    started = session.get("signed_in_at", 0)
    # An absolute limit: the cookie's own expiry is refreshed on every request.
    fresh = time.time() - started < SESSION_LIFETIME.total_seconds()
    admin_id = session.get("admin_id")
    sso = session.get("sso")
    if fresh and admin_id:
        candidate = AdminUser.get_or_none(AdminUser.id == admin_id)
        if candidate is not None and session.get("admin_pw") == password_fingerprint(candidate):
            user = Principal(role="admin", name=candidate.username, via="local", admin_id=candidate.id)
    elif fresh and isinstance(sso, dict) and sso.get("role") in ROLES:
        secret = _companion_secret()
        if secret and sso.get("fp") == secret_fingerprint(secret):
            uid = int(sso.get("uid") or 0)
            user = Principal(role=sso["role"], name=str(sso.get("name") or f"WordPress user {uid}"), via="sso",
                             wp_user_id=uid, doctor_id=uid if sso["role"] == "doctor" else None)
    cache["user"] = user
    return user


def current_admin() -> Principal | None:
    """The signed-in admin (local account or SSO administrator) for this request, or None."""
    user = current_user()
    return user if user is not None and user.is_admin else None


def _request_cache() -> dict:
    if not hasattr(g, "sidecar_cache"):
        g.sidecar_cache = {}
    return g.sidecar_cache


def forbidden(message: str = "", status: int = 403):
    """The 403 answer for a signed-in person without the right role (JSON under /api/)."""
    text = message or "Your account cannot open this page."
    if request.path.startswith("/api/"):
        return {"error": "forbidden", "message": text}, status
    return render_template("error.html", title="Not allowed", message=text), status


def _sign_in_first():
    if request.path.startswith("/api/"):
        return {"error": "sign in required"}, 401
    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def roles_required(*roles: str):
    """Decorator: the view needs one of ``roles``. Nobody signed in: the sign-in page (401 JSON under
    /api/); signed in with another role: 403."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return _sign_in_first()
            if user.role not in roles:
                if user.is_doctor:
                    return forbidden("Doctors can open only their own calendar page (My calendar).")
                return forbidden("Your account can view the dashboard, but not change anything or open this page.")
            return view(*args, **kwargs)
        return wrapper
    return decorate


admin_required = roles_required("admin")
admin_required.__doc__ = "Decorator: the view needs a signed-in admin (local or SSO); others get 403 or the sign-in page."

# POST endpoints a signed-in non-admin may reach at all (the views still check whose data it is).
WRITABLE_BY_ROLE = {
    "doctor": {"auth.logout", "auth.login", "connect.my_connect", "connect.my_disconnect", "connect.calendar",
               "connect.busy", "connect.preview"},
    "receptionist": {"auth.logout", "auth.login"},
}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def refuse_writes_by_role():
    """``before_request``: a doctor or receptionist may POST only to ``WRITABLE_BY_ROLE``; everything
    else is 403 before the view runs. Signed requests from the plugin (``hooks.*``) carry no session."""
    if request.method in _SAFE_METHODS or (request.endpoint or "").startswith(("hooks.", "google_hooks.", "static")):
        return None
    user = current_user()
    if user is None or user.is_admin:
        return None
    if request.endpoint in WRITABLE_BY_ROLE.get(user.role, set()):
        return None
    return forbidden("Your account can only look, not change anything here.")


def safe_next(target: str | None) -> str:
    """Only a local path may be a post-login destination (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.index")


# ---- sign-in throttling ----------------------------------------------------------------------------

class LoginLimiter:
    """In-memory throttle: at most ``limit`` failures per (IP, username) within ``window`` seconds.

    Per process, forgotten at restart: it slows down password guessing, it is not an audit log.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, clock=time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, key) -> deque:
        entries = self._failures[key]
        cutoff = self.clock() - self.window
        while entries and entries[0] < cutoff:
            entries.popleft()
        return entries

    def blocked(self, ip: str, username: str) -> bool:
        key = (ip or "", (username or "").lower())
        with self._lock:
            blocked = len(self._prune(key)) >= self.limit
            if not self._failures[key]:
                del self._failures[key]
            return blocked

    def failed(self, ip: str, username: str) -> None:
        with self._lock:
            self._prune((ip or "", (username or "").lower())).append(self.clock())

    def succeeded(self, ip: str, username: str) -> None:
        with self._lock:
            self._failures.pop((ip or "", (username or "").lower()), None)


def limiter() -> LoginLimiter:
    return current_app.extensions["sidecar_login_limiter"]
