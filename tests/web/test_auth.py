"""First-run setup, sign in and out, throttling, CSRF, cookies and headers of the web pages."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from sidecar.storage.models import AdminUser, OneTimeToken, SettingRow
from sidecar.web import create_admin, create_app, create_setup_link
from sidecar.web.security import LoginLimiter, SECRET_KEY_NAME

from .conftest import ADMIN, PASSWORD, csrf, sign_in, text_of


def test_every_page_leads_to_setup_before_an_admin_exists(app):
    client = app.test_client()
    for path in ("/", "/settings", "/connect", "/login", "/api/status", "/connect/start?token=x"):
        answer = client.get(path)
        assert answer.status_code == 302, path
        assert answer.headers["Location"] == "/setup"
    assert client.get("/healthz").json == {"status": "ok", "database": "ok"}
    page = client.get("/setup")
    assert page.status_code == 200
    assert "open the setup link" in text_of(page.text)
    assert "<form" not in page.text  # no way to create an account without the link
    assert client.get("/setup?token=guessed").status_code == 403


def test_setup_link_creates_the_admin_once(app, rt):
    link = create_setup_link(rt)
    assert link.startswith("http://127.0.0.1:8300/setup?token=")
    token = link.split("token=")[1]
    assert OneTimeToken.get().token_hash != token  # only the hash is stored
    client = app.test_client()
    path = urlparse(link).path + "?" + urlparse(link).query
    form = client.get(path)
    assert form.status_code == 200 and 'name="password"' in form.text

    short = client.post("/setup", data={"csrf_token": csrf(form.text), "token": token, "username": "admin",
                                        "password": "short", "password_confirm": "short"})
    assert short.status_code == 400
    assert "at least 12 characters" in text_of(short.text)
    differ = client.post("/setup", data={"csrf_token": csrf(form.text), "token": token, "username": "admin",
                                         "password": PASSWORD, "password_confirm": PASSWORD + "x"})
    assert "not the same" in text_of(differ.text)
    assert AdminUser.select().count() == 0

    done = client.post("/setup", data={"csrf_token": csrf(form.text), "token": token, "username": "admin",
                                       "password": PASSWORD, "password_confirm": PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/settings"
    assert client.get("/").status_code == 200  # signed in
    user = AdminUser.get()
    assert user.username == "admin" and user.password_hash.startswith("scrypt:")
    assert OneTimeToken.get().used_at is not None
    # The link is spent, and /setup is closed now that an admin exists.
    assert app.test_client().get(path).headers["Location"] == "/login"


def test_sign_in_wrong_password_and_sign_out(app, rt):
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    assert client.get("/settings").headers["Location"] == "/login?next=/settings"
    wrong = sign_in(client, password="not the password at all")
    assert wrong.status_code == 401
    assert "user name or password is not correct" in text_of(wrong.text)
    unknown = sign_in(client, username="nobody")
    assert unknown.status_code == 401
    page = client.get("/login?next=/settings")
    ok = client.post("/login", data={"csrf_token": csrf(page.text), "username": ADMIN, "password": PASSWORD,
                                     "next": "/settings"})
    assert ok.headers["Location"] == "/settings"
    assert AdminUser.get().last_login_at is not None
    dash = client.get("/")
    assert dash.status_code == 200
    assert client.get("/logout").status_code == 405  # signing out is a POST with a CSRF token
    out = client.post("/logout", data={"csrf_token": csrf(dash.text)})
    assert out.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_next_must_be_a_local_path(app, rt):
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    page = client.get("/login")
    answer = client.post("/login", data={"csrf_token": csrf(page.text), "username": ADMIN, "password": PASSWORD,
                                         "next": "//evil.example/x"})
    assert answer.headers["Location"] == "/"


def test_rate_limit_after_five_failures(app, rt):
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, password="wrong password here").status_code == 401
    blocked = sign_in(client)  # even the right password waits now
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in text_of(blocked.text)
    # Another user name from the same address is not blocked.
    assert sign_in(client, username="someone-else", password="x" * 12).status_code == 401


def test_limiter_forgets_after_the_window():
    now = [1000.0]
    limiter = LoginLimiter(limit=2, window=300, clock=lambda: now[0])
    limiter.failed("1.2.3.4", "Admin")
    limiter.failed("1.2.3.4", "admin")
    assert limiter.blocked("1.2.3.4", "ADMIN")
    assert not limiter.blocked("5.6.7.8", "admin")
    now[0] += 301
    assert not limiter.blocked("1.2.3.4", "admin")


def test_csrf_rejects_a_post_without_token(admin_client):
    answer = admin_client.post("/settings", data={"section": "google", "google.app_name": "Evil"})
    assert answer.status_code == 400
    assert "This form has expired" in text_of(answer.text)
    assert admin_client.post("/logout").status_code == 400


def test_session_cookie_flags_http(admin_client, app):
    page = app.test_client()
    answer = sign_in(page)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    assert "Expires=" in cookie  # a permanent session with a lifetime, not a browser-lifetime one


def test_session_cookie_secure_when_public_url_is_https(make_rt):
    rt = make_rt(**{"web.public_url": "https://sidecar.clinic.example"})
    app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    page = client.get("/login", base_url="https://sidecar.clinic.example")
    answer = client.post("/login", base_url="https://sidecar.clinic.example",
                         headers={"Referer": "https://sidecar.clinic.example/login"},
                         data={"csrf_token": csrf(page.text), "username": ADMIN, "password": PASSWORD})
    assert answer.status_code == 302
    assert "Secure" in answer.headers["Set-Cookie"]


def test_sessions_end_after_twelve_hours(admin_client):
    assert admin_client.get("/").status_code == 200
    with admin_client.session_transaction() as session:
        session["signed_in_at"] = int(time.time()) - 13 * 3600
    assert admin_client.get("/").status_code == 302


def test_new_password_signs_out_other_sessions(admin_client, rt):
    create_admin(rt, ADMIN, PASSWORD + " changed", replace=True)
    assert admin_client.get("/").status_code == 302


def test_security_headers(admin_client):
    answer = admin_client.get("/")
    assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "<script>" not in answer.text and "style=" not in answer.text  # nothing inline for the CSP to block
    assert admin_client.get("/static/style.css").status_code == 200


def test_create_admin_checks(rt):
    with pytest.raises(ValueError, match="12 characters"):
        create_admin(rt, "admin", "short")
    with pytest.raises(ValueError, match="Username"):
        create_admin(rt, "has space", PASSWORD)
    create_admin(rt, "admin", PASSWORD)
    with pytest.raises(ValueError, match="exists already"):
        create_admin(rt, "admin", PASSWORD)


def test_secret_key_is_created_once_and_stored_encrypted(make_rt):
    rt = make_rt()
    first = create_app(rt).config["SECRET_KEY"]
    assert len(first) >= 32
    assert create_app(rt).config["SECRET_KEY"] == first
    row = SettingRow.get(SettingRow.key == SECRET_KEY_NAME)
    assert row.encrypted and first not in row.value


def _sign_in_from(client, forwarded_for: str, password: str):
    page = client.get("/login", headers={"X-Forwarded-For": forwarded_for})
    return client.post("/login", headers={"X-Forwarded-For": forwarded_for},
                       data={"csrf_token": csrf(page.text), "username": ADMIN, "password": password})


def test_behind_one_proxy_the_limit_counts_the_visitor_not_the_proxy(make_rt):
    rt = make_rt(**{"web.proxy_hops": 1})
    create_admin(rt, ADMIN, PASSWORD)
    client = create_app(rt).test_client()
    for _ in range(5):
        assert _sign_in_from(client, "203.0.113.5", "wrong password here").status_code == 401
    assert _sign_in_from(client, "203.0.113.5", PASSWORD).status_code == 429
    # Another visitor behind the same proxy signs in: the proxy's own address is not what was blocked.
    assert _sign_in_from(client, "198.51.100.7", PASSWORD).status_code == 302


def test_without_a_proxy_a_forged_forwarded_header_does_not_escape_the_limit(app, rt):
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    for n in range(5):
        assert _sign_in_from(client, f"203.0.113.{n}", "wrong password here").status_code == 401
    assert _sign_in_from(client, "198.51.100.7", PASSWORD).status_code == 429
