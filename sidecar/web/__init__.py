"""The sidecar's web pages: a Flask application factory and the security rules every page shares.

``create_app(runtime)`` builds the app from a ``sidecar.runtime.Runtime``; one blueprint per area:

- ``auth``: first-run setup (one-time link printed by the CLI), sign in, sign out;
- ``sso``: sign-in from WordPress through the companion plugin's signed, single-use link (``/sso``);
- ``dashboard``: the home page (doctors, sync state, health, recent activity) and ``/api/status``;
- ``settings``: Google, KiviCare, sync, telemedicine and companion plugin settings;
- ``connect``: doctors' Google connections (admin on their behalf, a doctor's Connect link, or a
  doctor signed in from WordPress on ``/me``), the OAuth callback, the calendar choice, the calendars
  that block booking time, reset sync, disconnect;
- ``conflicts``: changes the sidecar will not decide alone, side by side, resolved by an admin;
- ``synclog_page``: the sync log (``/log``): filters, pages, CSV export, next steps for failures;
- ``audit``: the audit trail of admin actions (``/audit``) and ``audit.record`` for the other blueprints;
- ``hooks``: signed calls from the companion plugin (``/hooks/kivicare`` hints, ``/hooks/ping``);
- ``health``: ``/healthz`` for load balancers and monitors.

Roles (``security.Principal``): admins (local accounts, WordPress administrators and clinic admins)
see everything; doctors only their own calendar page and their own conflicts (read-only); receptionists
the dashboard and the conflicts, read-only.

Security: CSRF tokens on every POST (Flask-WTF) except the plugin's signed hooks, HttpOnly +
SameSite=Lax session cookies that are Secure when the public URL is https, sessions that end after
12 hours, a Content-Security-Policy without inline code, and no page that shows a stored secret
(the companion secret is shown only on an admin's explicit request). For the CLI: ``create_app``,
``create_setup_link``, ``create_admin`` and ``create_connect_link``.
"""

from __future__ import annotations

from flask import Flask, redirect, render_template, request, url_for
from flask_babel import Babel
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect

from ..config import ROOT
from ..storage import close_database
from . import common
from .security import (SESSION_LIFETIME, LoginLimiter, admin_exists, current_admin, current_user, load_secret_key,
                       refuse_writes_by_role)

# Reachable before the first admin exists (everything else redirects to /setup). The plugin's hooks
# answer JSON (503 until a secret exists), never a redirect.
_OPEN_BEFORE_SETUP = {"auth.setup", "health.healthz", "static", "hooks.kivicare", "hooks.ping",
                      "google_hooks.notification"}

CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
       "frame-ancestors 'none'")


def create_app(runtime) -> Flask:
    """Build the web app for ``runtime`` (a ``sidecar.runtime.Runtime`` with its database open).

    The session key is created on first use and kept encrypted in the settings table, so sessions
    survive restarts. Raises peewee errors if the database is unreachable.
    """
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder="static")
    public_url = str(runtime.cfg.get("web.public_url") or "")
    app.config.update(
        SECRET_KEY=load_secret_key(runtime),
        SESSION_COOKIE_NAME="sidecar_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # sent on Google's redirect back (a top-level GET), not on cross-site POSTs
        SESSION_COOKIE_SECURE=public_url.lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        WTF_CSRF_TIME_LIMIT=int(SESSION_LIFETIME.total_seconds()),  # a form left open all day still works
        MAX_CONTENT_LENGTH=256 * 1024,
    )
    app.extensions["sidecar_runtime"] = runtime
    hops = int(runtime.cfg.get("web.proxy_hops") or 0)
    if hops > 0:
        # Behind nginx or a load balancer: trust its X-Forwarded-* headers for exactly that many hops,
        # so request.remote_addr (login limits, audit) is the visitor's address.
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.extensions["sidecar_login_limiter"] = LoginLimiter()
    csrf = CSRFProtect(app)
    # Translatable strings: templates use _() / ngettext(), Python code flask_babel.gettext. The
    # catalogue lives in sidecar/translations (`make messages` extracts the strings); English is built in.
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(ROOT / "sidecar" / "translations"))
    Babel(app, locale_selector=_locale)

    from . import audit, auth, conflicts, connect, dashboard, google_hooks, health, hooks, settings, sso
    from . import navigation, synclog_page
    app.extensions["sidecar_hints"] = hooks.HintDispatcher(runtime)
    for blueprint in (auth.bp, sso.bp, dashboard.bp, settings.bp, connect.bp, conflicts.bp, hooks.bp,
                      google_hooks.bp, health.bp, audit.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(synclog_page.bp)  # /log and /log.csv
    navigation.install(app)  # nav_items(), home_url(), page_language() for base.html
    csrf.exempt(hooks.bp)  # signed with the shared secret instead; no browser session involved
    csrf.exempt(google_hooks.bp)  # Google's channel token instead

    app.add_template_filter(common.relative, "relative")
    app.add_template_filter(common.absolute, "absolute")
    app.add_template_filter(common.iso, "iso")
    app.add_template_filter(common.clock, "clock")

    @app.context_processor
    def page_globals():
        return {"current_admin": current_admin(), "current_user": current_user(),
                "app_name": runtime.cfg.get("google.app_name"),
                # Called by the navigation only when someone is signed in (one count query).
                "open_conflict_count": conflicts.open_count}

    setup_done = {"yes": False}  # once an admin exists it stays; saves a query per request

    @app.before_request
    def first_run_gate():
        if request.endpoint in _OPEN_BEFORE_SETUP or setup_done["yes"]:
            return None
        if admin_exists():
            setup_done["yes"] = True
            return None
        return redirect(url_for("auth.setup"))

    # Doctors and receptionists may POST only to the few endpoints meant for them (views check too).
    app.before_request(refuse_writes_by_role)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # Never tell Google (or any other site) the URL of a page: it may hold a one-time link.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.teardown_request
    def close_db(_exc):
        # Each request thread opens its own connection on first use; give it back.
        close_database()

    @app.errorhandler(CSRFError)
    def csrf_failed(_error):
        return render_template("error.html", title=_("This form has expired"),
                               message=_("The page was open for too long, or the form came from another site. "
                                         "Go back, reload the page and try again.")), 400

    @app.errorhandler(404)
    def not_found(_error):
        return render_template("error.html", title=_("Page not found"),
                               message=_("There is no page at this address.")), 404

    @app.errorhandler(500)
    def server_error(_error):
        return render_template("error.html", title=_("Something went wrong"),
                               message=_("The sidecar could not finish this request. The details are in its log.")), 500

    return app


def _locale() -> str:
    """The page language: the best match of the browser's Accept-Language among shipped catalogues."""
    return request.accept_languages.best_match(available_locales()) or "en"


def available_locales() -> list[str]:
    """Languages with a compiled catalogue under sidecar/translations, English always first."""
    folder = ROOT / "sidecar" / "translations"
    found = sorted(p.name for p in folder.glob("*/LC_MESSAGES/messages.mo")) if folder.is_dir() else []
    return ["en", *[name for name in found if name != "en"]]


def create_setup_link(runtime) -> str:
    """A first-run link (valid 24 hours, single use): ``<public_url>/setup?token=…``. For the CLI to print."""
    from .auth import create_setup_link as _create
    return _create(runtime)


def create_admin(runtime, username: str, password: str, *, replace: bool = False):
    """Create a local admin (or, with ``replace``, give an existing one a new password). For the CLI.

    Returns the ``AdminUser``. Raises ValueError with a readable message (bad username, password
    shorter than 12 characters, user exists and ``replace`` is False).
    """
    from .auth import create_admin as _create
    return _create(runtime, username, password, replace=replace)


def create_connect_link(runtime, doctor_id: int) -> str:
    """A doctor's Connect link (7 days, single use; cancels the doctor's earlier unused link):
    ``<public_url>/connect/start?token=…``. For the CLI and the demo."""
    from .connect import create_connect_link as _create
    return _create(runtime, doctor_id)


__all__ = ["create_app", "create_setup_link", "create_admin", "create_connect_link"]
