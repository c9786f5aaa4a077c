"""Sign-in pages: first-run setup through a one-time link, sign in, sign out.

Until an admin exists every page leads to ``/setup``, which works only with the link the CLI
prints at start (``create_setup_link``), so whoever finds the port first cannot claim the sidecar.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from ..storage import transaction
from ..storage.models import AdminUser
from . import audit
from .security import (SETUP_TTL, admin_exists, authenticate, check_new_credentials, consume_token,
                       current_admin, hash_password, limiter, new_token, safe_next, start_admin_session,
                       valid_token)

bp = Blueprint("auth", __name__)


# ---- for the CLI --------------------------------------------------------------------------------

def create_setup_link(rt) -> str:
    """Store a new setup token (SHA-256 only, 24 h) and return ``<public_url>/setup?token=…``."""
    token = new_token("setup", SETUP_TTL)
    return rt.cfg.get("web.public_url").rstrip("/") + "/setup?token=" + token


def create_admin(rt, username: str, password: str, *, replace: bool = False) -> AdminUser:
    """Create admin ``username`` (or set a new password with ``replace``). Raises ValueError (readable)."""
    username = (username or "").strip()
    problems = check_new_credentials(username, password)
    if problems:
        raise ValueError(" ".join(f"{field.capitalize()}: {text}" for field, text in problems.items()))
    with transaction():
        user = AdminUser.get_or_none(AdminUser.username == username)
        if user is not None:
            if not replace:
                raise ValueError(f"An admin named {username!r} exists already.")
            user.password_hash = hash_password(password)
            user.save()
            return user
        return AdminUser.create(username=username, password_hash=hash_password(password))


# ---- pages ----------------------------------------------------------------------------------------

@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: choose the admin's user name and password. Needs the one-time setup link."""
    if admin_exists():
        return redirect(url_for("auth.login"))
    token = request.values.get("token", "")
    row = valid_token(token, "setup")
    if row is None:
        return render_template("auth/setup_link.html", given=bool(token)), (403 if token else 200)
    errors: dict[str, str] = {}
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        errors = check_new_credentials(username, password)
        if not errors and password != request.form.get("password_confirm", ""):
            errors["password_confirm"] = "The two passwords are not the same."
        if not errors:
            with transaction():
                # Single use, and only while no admin exists (two tabs submitting at once).
                if admin_exists() or not consume_token(row):
                    return redirect(url_for("auth.login"))
                user = AdminUser.create(username=username, password_hash=hash_password(password))
            start_admin_session(user)
            audit.record("admin_created", user.username, "first-run setup link")
            flash("Your admin account is ready. Next: enter the Google and KiviCare settings.", "ok")
            return redirect(url_for("settings.index"))
    return render_template("auth/setup.html", token=token, username=username, errors=errors), (
        400 if errors else 200)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with a local admin account. Five failures in five minutes pause that user name on that address."""
    next_url = request.values.get("next", "")
    if current_admin() is not None:
        return redirect(safe_next(next_url))
    username, error, status = "", "", 200
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        ip = request.remote_addr or ""
        if limiter().blocked(ip, username):
            error, status = "Too many failed sign-ins. Wait five minutes, then try again.", 429
        else:
            user = authenticate(username, password)
            if user is None:
                limiter().failed(ip, username)
                audit.record("sign_in_failed", username, "local account: wrong user name or password")
                error, status = "The user name or password is not correct.", 401
            else:
                limiter().succeeded(ip, username)
                start_admin_session(user)
                audit.record("signed_in", user.username, "local account")
                return redirect(safe_next(next_url))
    return render_template("auth/login.html", username=username, error=error, next_url=next_url), status


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out (a POST with a CSRF token, so another site cannot sign you out)."""
    session.clear()
    flash("You are signed out.", "ok")
    return redirect(url_for("auth.login"))


__all__ = ["bp", "create_setup_link", "create_admin"]
