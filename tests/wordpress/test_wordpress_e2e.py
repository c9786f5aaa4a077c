"""End to end: the companion plugin on a real WordPress.

Debian's `wordpress` package tree (copied to a temp folder, with our own wp-config.php), a MariaDB
server started on loopback in a temp datadir, WordPress's own installer, PHP's built-in server,
the plugin activated, and two test-only must-use plugins: ``kivicare-test-double.php`` (a test
fixture standing in for the few KiviCare names the plugin touches, not a copy of KiviCare) and
``mail-capture.php`` (wp_mail → a JSON-lines file). A tiny HTTP server in this process plays the
sidecar and checks every hint's signature with PROTOCOL.md's algorithm, written here again.

Set KC_E2E_KEEP=1 to keep the temp folder (site, debug.log, mail log) for a look afterwards.
Skipped, with the reason, only when php (with mysqli), MariaDB or the wordpress package is missing;
``.ci/run`` installs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN = ROOT / "wp_bridge" / "wordpress" / "kivicare-sidecar-bridge"
WP_SRC = Path("/usr/share/wordpress")
SECRET = secrets.token_urlsafe(32)
API = "/wp-json/kc-sidecar/v1"


def _tool(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    return found or next((f for f in fallbacks if os.access(f, os.X_OK)), None)


PHP = _tool("php")
MARIADBD = _tool("mariadbd", "/usr/sbin/mariadbd")
INSTALL_DB = _tool("mariadb-install-db", "/usr/bin/mariadb-install-db")
MARIADB_ADMIN = _tool("mariadb-admin", "/usr/bin/mariadb-admin")
MARIADB = _tool("mariadb", "/usr/bin/mariadb")


def _missing() -> str | None:
    if not PHP:
        return "php is not installed (apt-get install php-cli php-mysql php-xml php-mbstring php-curl)"
    probe = subprocess.run([PHP, "-r", "exit(extension_loaded('mysqli') ? 0 : 1);"], capture_output=True, timeout=30)
    if probe.returncode:
        return "php has no mysqli extension (apt-get install php-mysql)"
    if not (MARIADBD and INSTALL_DB and MARIADB_ADMIN and MARIADB):
        return "MariaDB is not installed (apt-get install mariadb-server)"
    if not (WP_SRC / "wp-settings.php").is_file():
        return "Debian's wordpress package is not installed (apt-get install wordpress)"
    return None


# --- PROTOCOL.md, written again in Python --------------------------------------------------------

def sign(secret: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    message = method.upper().encode() + b"\n" + path.encode() + b"\n" + timestamp.encode() + b"\n" + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_sso(secret: str, token: str) -> dict:
    encoded, mac = token.split(".")
    assert hmac.compare_digest(hmac.new(secret.encode(), ("sso\n" + encoded).encode(), hashlib.sha256).hexdigest(), mac)
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


# --- the sidecar stand-in -------------------------------------------------------------------------

class Sidecar:
    """Receives hints and pings on loopback; `delay` makes /hooks/kivicare slow to answer."""

    def __init__(self, secret: str):
        self.secret, self.delay = secret, 0.0
        self.hints: list[dict] = []
        self.pings: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        sidecar = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                timestamp = self.headers.get("X-KC-Sidecar-Timestamp", "")
                signature = self.headers.get("X-KC-Sidecar-Signature", "")
                path = urlsplit(self.path).path
                good = hmac.compare_digest(sign(sidecar.secret, "POST", path, timestamp, body), signature) \
                    and timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 300
                record = {"path": path, "body": json.loads(body or b"null"), "signed": good, "at": at}
                if path == "/hooks/kivicare":
                    sidecar.hints.append(record)
                    time.sleep(sidecar.delay)
                    self._answer(202 if good else 401, {"ok": True} if good else {"error": "bad_signature"})
                elif path == "/hooks/ping":
                    sidecar.pings.append(record)
                    self._answer(200 if good else 401, {"ok": True, "sidecar_version": "e2e-stub"} if good else {"error": "bad_signature"})
                else:
                    self._answer(404, {"error": "not_found"})

            def _answer(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # The plugin does not wait for hint answers: the socket may be gone.

        return Handler

    def hint_for(self, appointment_id, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [h for h in self.hints if (h["body"] or {}).get("appointment_id") == str(appointment_id)]
            if found:
                return found
            time.sleep(0.02)
        return []

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- the site -------------------------------------------------------------------------------------

@dataclass
class Site:
    url: str
    sidecar: Sidecar
    users: dict
    mail_log: Path
    debug_log: Path
    seen_mails: int = field(default=0)

    def signed(self, method: str, route: str, body=None, *, secret: str = SECRET, timestamp: int | None = None,
               sign_path: str | None = None, sign_body: bytes | None = None) -> requests.Response:
        """A request to the plugin, signed as PROTOCOL.md says (or wrongly, on purpose)."""
        path = API + route
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"X-KC-Sidecar-Timestamp": ts,
                   "X-KC-Sidecar-Signature": sign(secret, method, sign_path or path, ts, data if sign_body is None else sign_body)}
        if data:
            headers["Content-Type"] = "application/json"
        return requests.request(method, self.url + path, data=data, headers=headers, timeout=30)

    def fixture(self, method: str, route: str, **params) -> requests.Response:
        """The KiviCare test double's routes (kc-test/v1)."""
        url = self.url + "/wp-json/kc-test/v1" + route
        if method == "GET":
            return requests.get(url, params=params, timeout=30)
        return requests.request(method, url, json=params, timeout=30)

    def book(self, doctor: str, date: str, at: str, minutes: int = 30) -> requests.Response:
        return self.fixture("POST", "/book", doctor_id=self.users[doctor], patient_id=self.users["jane"], date=date,
                            time=at, minutes=minutes, description="keep this note")

    def appointment(self, appointment_id) -> dict:
        response = self.fixture("GET", f"/appointments/{appointment_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def busy(self, doctor: str, date: str, first: str, last: str) -> dict:
        return self.fixture("GET", "/busy", doctor_id=self.users[doctor], date=date, **{"from": first, "to": last}).json()

    def new_mails(self) -> list[dict]:
        lines = self.mail_log.read_text().splitlines() if self.mail_log.exists() else []
        fresh, self.seen_mails = lines[self.seen_mails:], len(lines)
        return [json.loads(line) for line in fresh]

    def login(self, user: str) -> requests.Session:
        session = requests.Session()
        session.get(self.url + "/wp-login.php", timeout=30)
        password = "admin-pass-123" if user == "admin" else f"{user}-pass-123"
        response = session.post(self.url + "/wp-login.php", allow_redirects=False, timeout=30,
                                data={"log": user, "pwd": password, "wp-submit": "Log In", "testcookie": "1",
                                      "redirect_to": self.url + "/wp-admin/"})
        assert response.status_code == 302, response.text[:500]
        return session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _run(args: list[str], **kwargs) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _as_root() -> list[str]:
    return ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without it.


def _start_mariadb(tmp: Path) -> tuple[subprocess.Popen, str]:
    data, sock = tmp / "db", str(tmp / "db.sock")
    _run([INSTALL_DB, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
          "--skip-test-db", *_as_root()])
    proc = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={_free_port()}",
         "--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
         f"--log-error={tmp / 'db.err'}", f"--pid-file={tmp / 'db.pid'}", *_as_root()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: subprocess.run([MARIADB_ADMIN, "--no-defaults", f"--socket={sock}", "-uroot", "ping"],
                                 capture_output=True, timeout=10).returncode == 0, "MariaDB")
    _run([MARIADB, "--no-defaults", f"--socket={sock}", "-uroot", "-e", "CREATE DATABASE wordpress"])
    return proc, sock


def _stop_mariadb(proc: subprocess.Popen, sock: str):
    subprocess.run([MARIADB_ADMIN, "--no-defaults", f"--socket={sock}", "-uroot", "shutdown"], capture_output=True, timeout=30)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _make_wordpress(tmp: Path, url: str, sock: str) -> Path:
    wp = tmp / "wp"
    shutil.copytree(WP_SRC, wp, symlinks=True)
    (wp / "wp-config.php").unlink()
    keys = "\n".join(f"define('{k}', '{secrets.token_hex(32)}');" for k in (
        "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"))
    (wp / "wp-config.php").write_text(f"""<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', 'localhost:{sock}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{keys}
$table_prefix = 'wp_';
define('WP_HOME', '{url}');
define('WP_SITEURL', '{url}');
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
define('WP_CONTENT_URL', '{url}/wp-content');
define('WP_DEBUG', true);
define('WP_DEBUG_DISPLAY', false);
define('WP_DEBUG_LOG', '{tmp / "debug.log"}');
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('KC_TEST_MAIL_LOG', '{tmp / "mail.jsonl"}');
if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');
require_once ABSPATH . 'wp-settings.php';
""")
    # Installed from the zip the build script produces, as an admin would upload it.
    built = _run(["bash", str(PLUGIN.parent / "build.sh"), str(tmp / "dist")]).strip().split(" ")[0]
    with zipfile.ZipFile(built) as archive:
        assert "kivicare-sidecar-bridge/kivicare-sidecar-bridge.php" in archive.namelist()
        archive.extractall(wp / "wp-content" / "plugins")
    mu = wp / "wp-content" / "mu-plugins"
    mu.mkdir()
    for name in ("kivicare-test-double.php", "mail-capture.php"):
        shutil.copy(HERE / name, mu / name)
    return wp


ROUTER = """<?php
// PHP built-in server router: real files as they are, everything else through WordPress's index.php.
$root = $_SERVER['DOCUMENT_ROOT'];
$path = urldecode((string) parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH));
if ($path !== '/' && (is_file($root . $path) || is_file(rtrim($root . $path, '/') . '/index.php'))) {
    return false;
}
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $root . '/index.php';
require $root . '/index.php';
"""


@pytest.fixture(scope="module")
def site():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="kcwp-"))
    db = server = sidecar = None
    try:
        started = time.monotonic()
        db = _start_mariadb(tmp)
        sidecar = Sidecar(SECRET)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        wp = _make_wordpress(tmp, url, db[1])
        env = {**os.environ, "KC_TEST_HOST": f"127.0.0.1:{port}", "KC_TEST_SIDECAR": sidecar.url, "KC_TEST_SECRET": SECRET}
        _run([PHP, str(HERE / "install-site.php"), str(wp), "install"], env=env)
        users = json.loads(_run([PHP, str(HERE / "install-site.php"), str(wp), "setup"], env=env).strip().splitlines()[-1])
        (tmp / "router.php").write_text(ROUTER)
        server = subprocess.Popen([PHP, "-S", f"127.0.0.1:{port}", "-t", str(wp), str(tmp / "router.php")],
                                  env={**os.environ, "PHP_CLI_SERVER_WORKERS": "4"}, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "php-server.log", "w"))
        _wait(lambda: requests.get(url + "/wp-json/", timeout=5).status_code == 200, "PHP built-in server")
        the_site = Site(url=url, sidecar=sidecar, users=users, mail_log=tmp / "mail.jsonl", debug_log=tmp / "debug.log")
        the_site.new_mails()  # Forget the installer's e-mails.
        print(f"\nWordPress e2e site ready in {time.monotonic() - started:.1f}s at {url}")
        yield the_site
        log = the_site.debug_log.read_text() if the_site.debug_log.exists() else ""
        ours = [line for line in log.splitlines() if "kivicare-sidecar-bridge" in line]
        assert not ours, "PHP notices from the plugin:\n" + "\n".join(ours)
    finally:
        if server:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        if sidecar:
            sidecar.stop()
        if db:
            _stop_mariadb(*db)
        if os.environ.get("KC_E2E_KEEP"):
            print(f"\nKC_E2E_KEEP: site files and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --- the tests ------------------------------------------------------------------------------------

def test_status_answers_signed(site):
    body = site.signed("GET", "/status").json()
    assert body == {"ok": True, "plugin_version": "1.0.0", "kivicare_version": "4.3.0",
                    "features": ["hints", "busy", "meet", "reschedule", "mail", "sso"], "site_timezone": "Europe/Paris"}


def test_hint_leaves_during_the_booking_without_delaying_it(site):
    first = site.book("anna", "2027-02-01", "09:00")
    assert first.status_code == 201, first.text
    baseline = min(_timed(lambda: site.book("anna", "2027-02-01", at)) for at in ("10:00", "11:00"))

    site.sidecar.delay = 2.0  # The sidecar now takes 2 s to answer a hint.
    try:
        started = time.monotonic()
        slow = site.book("anna", "2027-02-01", "12:00")
        elapsed = time.monotonic() - started
    finally:
        site.sidecar.delay = 0.0
    assert slow.status_code == 201, slow.text
    appointment_id = slow.json()["data"]["appointment_id"]
    print(f"\nbooking: {baseline * 1000:.0f} ms with a fast sidecar, {elapsed * 1000:.0f} ms with a sidecar sleeping 2 s")
    assert elapsed < 0.9 and elapsed < baseline + 0.5, f"booking took {elapsed:.2f}s (baseline {baseline:.2f}s)"

    hints = site.sidecar.hint_for(appointment_id)
    assert len(hints) == 1, site.sidecar.hints
    hint = hints[0]
    assert hint["signed"], "hint signature must verify with PROTOCOL.md's algorithm"
    assert hint["body"]["event"] == "kc_after_create_appointment"
    assert hint["body"]["site"] == site.url and abs(hint["body"]["sent_at"] - time.time()) < 30
    assert hint["at"] - started < elapsed + 0.2, "the hint left during the booking request"

    changed = site.fixture("PUT", f"/appointments/{appointment_id}/status", status=0)
    assert changed.status_code == 200
    events = [h["body"]["event"] for h in _wait_for_count(site, appointment_id, 2)]
    assert events[1] in ("kc_appointment_cancelled", "kc_appointment_status_update")


def _timed(call) -> float:
    started = time.monotonic()
    response = call()
    assert response.status_code == 201, response.text
    return time.monotonic() - started


def _wait_for_count(site, appointment_id, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hints = site.sidecar.hint_for(appointment_id, timeout=0.1)
        if len(hints) >= count:
            return hints
    raise AssertionError(f"expected {count} hints for {appointment_id}: {site.sidecar.hints}")


def test_busy_blocks_come_back_in_local_time_and_block_booking(site):
    anna, marc = site.users["anna"], site.users["marc"]
    pushed = site.signed("PUT", "/busy", {
        "doctor_id": anna, "window_start": "2027-03-13T00:00:00Z", "window_end": "2027-03-17T00:00:00Z",
        "blocks": [
            {"id": "gcal_standup", "start": "2027-03-15T14:00:00Z", "end": "2027-03-15T15:00:00Z", "name": "Stand-up"},
            # New York springs forward at 02:00 on 2027-03-14: 06:30Z–07:30Z is 01:30 EST → 03:30 EDT.
            {"id": "gcal_night", "start": "2027-03-14T06:30:00Z", "end": "2027-03-14T07:30:00Z", "name": "Busy"},
        ]})
    assert pushed.status_code == 200 and pushed.json() == {"ok": True, "stored": 2}, pushed.text
    site.signed("PUT", "/busy", {"doctor_id": marc, "window_start": "2027-03-15T00:00:00Z",
                                 "window_end": "2027-03-16T00:00:00Z",
                                 "blocks": [{"id": "m1", "start": "2027-03-15T09:00:00Z", "end": "2027-03-15T10:00:00Z"}]})

    seen = site.busy("anna", "2027-03-15", "2027-03-13", "2027-03-16")
    assert seen["single"] == [{"start": "2027-03-15 10:00:00", "end": "2027-03-15 11:00:00", "name": "Stand-up"}]
    assert seen["month"] == [{"start": "2027-03-14 01:30:00", "end": "2027-03-14 03:30:00", "name": "Busy"},
                             {"start": "2027-03-15 10:00:00", "end": "2027-03-15 11:00:00", "name": "Stand-up"}]
    assert site.busy("marc", "2027-03-15", "2027-03-15", "2027-03-15")["single"] == [
        {"start": "2027-03-15 10:00:00", "end": "2027-03-15 11:00:00", "name": "Busy"}]  # Paris, CET.

    assert site.book("anna", "2027-03-15", "10:30").status_code == 409
    assert site.book("anna", "2027-03-15", "09:45").status_code == 409
    assert site.book("anna", "2027-03-15", "11:00").status_code == 201

    # A new push for the 15th replaces that day only.
    cleared = site.signed("PUT", "/busy", {"doctor_id": anna, "window_start": "2027-03-15T00:00:00Z",
                                           "window_end": "2027-03-16T00:00:00Z", "blocks": []})
    assert cleared.json() == {"ok": True, "stored": 0}
    seen = site.busy("anna", "2027-03-15", "2027-03-13", "2027-03-16")
    assert seen["single"] == [] and [b["start"] for b in seen["month"]] == ["2027-03-14 01:30:00"]
    assert site.book("anna", "2027-03-15", "10:00").status_code == 201


def test_meet_links_are_stored_shown_and_mailed_once(site):
    booked = site.book("anna", "2027-04-01", "09:00")
    appointment_id = booked.json()["data"]["appointment_id"]
    url = "https://meet.google.com/abc-defg-hij"
    site.new_mails()

    first = site.signed("PUT", f"/appointments/{appointment_id}/meet", {"url": url, "event_id": "evt1", "calendar_id": "anna@clinic.test"})
    assert first.json() == {"ok": True, "first": True}, first.text
    mails = site.new_mails()
    assert len(mails) == 1 and mails[0]["to"] == ["jane@patient.test"]
    assert url in mails[0]["message"] and "Anna Schmidt" in mails[0]["message"]
    assert "2027-04-01 at 09:00 (America/New_York)" in mails[0]["message"]

    again = site.signed("PUT", f"/appointments/{appointment_id}/meet", {"url": url, "event_id": "evt1", "calendar_id": "c"})
    assert again.json() == {"ok": True, "first": False}
    assert site.new_mails() == []

    views = site.appointment(appointment_id)
    for view in ("list", "data", "details"):
        assert views[view]["video_consultation"] is True, view
        assert views[view]["zoom_data"] == {"startUrl": url, "joinUrl": url}, view
        assert views[view]["google_meet_link"] == url, view

    assert site.signed("DELETE", f"/appointments/{appointment_id}/meet").json() == {"ok": True}
    views = site.appointment(appointment_id)
    assert views["list"]["video_consultation"] is False and "zoom_data" not in views["list"]

    missing = site.signed("PUT", "/appointments/999999/meet", {"url": url})
    assert missing.status_code == 404 and missing.json()["code"] == "kc_sidecar_not_found"
    assert site.signed("PUT", f"/appointments/{appointment_id}/meet", {"url": "http://evil.test/x"}).status_code == 400


def test_reschedule_keeps_duration_and_refuses_conflicts(site):
    moving = site.book("anna", "2027-05-03", "09:00", minutes=45).json()["data"]["appointment_id"]
    other = site.book("anna", "2027-05-03", "11:00").json()["data"]["appointment_id"]
    site.new_mails()

    moved = site.signed("POST", f"/appointments/{moving}/reschedule", {"start": "2027-05-04T13:15:00Z"})
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"ok": True, "appointment_id": str(moving), "start": "2027-05-04T13:15:00Z", "end": "2027-05-04T14:00:00Z"}
    row = site.appointment(moving)["data"]
    assert row["local"] == ["2027-05-04 09:15:00", "2027-05-04 10:00:00", "America/New_York"]
    assert row["utc"] == ["2027-05-04 13:15:00", "2027-05-04 14:00:00"]
    assert row["description"] == "keep this note"
    events = [h["body"]["event"] for h in site.sidecar.hint_for(moving)]
    assert events[-1] == "kc_sidecar_rescheduled", events
    mails = site.new_mails()
    assert len(mails) == 1 and mails[0]["to"] == ["jane@patient.test"]
    assert "from 2027-05-03 at 09:00 to 2027-05-04 at 09:15" in mails[0]["message"]

    site.signed("PUT", "/busy", {"doctor_id": site.users["anna"], "window_start": "2027-05-05T00:00:00Z",
                                 "window_end": "2027-05-07T00:00:00Z", "blocks": [
                                     {"id": "gcal_lunch", "start": "2027-05-05T14:00:00Z", "end": "2027-05-05T15:00:00Z"},
                                     {"id": "evt_own", "start": "2027-05-06T14:00:00Z", "end": "2027-05-06T15:00:00Z"}]})
    refusals = {
        "other appointment": (moving, "2027-05-03T14:45:00Z", 409, "kc_sidecar_slot_taken"),
        "busy block": (moving, "2027-05-05T14:30:00Z", 409, "kc_sidecar_slot_taken"),
        "unknown": (999999, "2027-05-05T18:00:00Z", 404, "kc_sidecar_not_found"),
    }
    for name, (appointment_id, start, status, code) in refusals.items():
        refused = site.signed("POST", f"/appointments/{appointment_id}/reschedule", {"start": start})
        assert (refused.status_code, refused.json()["code"]) == (status, code), name
    for checked in (4, 3):
        site.fixture("PUT", f"/appointments/{other}/status", status=checked)
        refused = site.signed("POST", f"/appointments/{other}/reschedule", {"start": "2027-05-08T15:00:00Z"})
        assert (refused.status_code, refused.json()["code"]) == (422, "kc_sidecar_not_movable")
    assert site.appointment(moving)["data"]["utc"] == ["2027-05-04 13:15:00", "2027-05-04 14:00:00"]
    assert site.appointment(other)["data"]["local"][0] == "2027-05-03 11:00:00"
    assert site.new_mails() == []

    # A block that is the appointment's own Google event does not block it.
    site.signed("PUT", f"/appointments/{moving}/meet", {"url": "https://meet.google.com/own-link", "event_id": "evt_own"})
    site.new_mails()
    own = site.signed("POST", f"/appointments/{moving}/reschedule", {"start": "2027-05-06T14:00:00Z"})
    assert own.status_code == 200 and own.json()["end"] == "2027-05-06T14:45:00Z", own.text


def test_mail_relay(site):
    site.new_mails()
    sent = site.signed("POST", "/mail", {"to": ["ops@clinic.test"], "subject": "Sync failing", "text": "Calendar of Anna: token revoked."})
    assert sent.json() == {"ok": True}
    assert site.new_mails() == [{"to": ["ops@clinic.test"], "subject": "Sync failing", "message": "Calendar of Anna: token revoked."}]
    failed = site.signed("POST", "/mail", {"to": ["ops@clinic.test"], "subject": "[fail] x", "text": "y"})
    assert (failed.status_code, failed.json()["code"]) == (502, "kc_sidecar_mail_failed")
    assert site.signed("POST", "/mail", {"to": ["nope"], "subject": "s", "text": "t"}).status_code == 400


def test_sso_redirects_staff_with_a_token_that_verifies(site):
    doctor = site.login("anna")
    tokens = []
    for _ in range(2):
        response = doctor.get(site.url + "/wp-admin/index.php?page=kc-sidecar-connect", allow_redirects=False, timeout=30)
        assert response.status_code == 302, response.text[:300]
        location = response.headers["Location"]
        assert location.startswith(site.sidecar.url + "/sso?token=")
        tokens.append(parse_qs(urlsplit(location).query)["token"][0])
    payloads = [verify_sso(SECRET, token) for token in tokens]
    payload = payloads[0]
    assert list(payload) == ["uid", "roles", "name", "email", "exp", "jti", "site"]
    assert payload["uid"] == site.users["anna"] and payload["roles"] == ["kiviCare_doctor"]
    assert payload["name"] == "Anna Schmidt" and payload["email"] == "anna.schmidt@clinic.test"
    assert 100 <= payload["exp"] - time.time() <= 121 and payload["site"] == site.url
    assert re.fullmatch(r"[0-9a-f]{32}", payload["jti"]) and payloads[1]["jti"] != payload["jti"]
    with pytest.raises(AssertionError):
        verify_sso("another-secret", tokens[0])

    sidebar = site.fixture("GET", "/sidebar", role="kiviCare_doctor").json()
    assert sidebar[-1]["label"] == "Google Calendar" and sidebar[-1]["type"] == "href"
    assert sidebar[-1]["link"] == site.url + "/wp-admin/index.php?page=kc-sidecar-connect"
    assert site.fixture("GET", "/sidebar", role="kiviCare_patient").json() == []

    patient = site.login("jane").get(site.url + "/wp-admin/index.php?page=kc-sidecar-connect", allow_redirects=False, timeout=30)
    assert patient.status_code == 403 and site.sidecar.url not in patient.headers.get("Location", "")


def test_settings_screen_masks_the_secret_and_tests_the_connection(site):
    admin = site.login("admin")
    page = admin.get(site.url + "/wp-admin/options-general.php?page=kc-sidecar", timeout=30)
    assert page.status_code == 200 and "KiviCare Sidecar" in page.text
    assert SECRET not in page.text and SECRET[:12] not in page.text and SECRET[-4:] in page.text
    assert site.sidecar.url in page.text

    nonce = re.search(r'name="action" value="kc_sidecar_test">\s*<input[^>]*name="_wpnonce" value="([0-9a-f]+)"', page.text).group(1)
    pings = len(site.sidecar.pings)
    tested = admin.post(site.url + "/wp-admin/admin-post.php", data={"action": "kc_sidecar_test", "_wpnonce": nonce,
                                                                      "_wp_http_referer": "/wp-admin/"}, timeout=30)
    assert tested.status_code == 200
    assert "The sidecar answered." in tested.text and "e2e-stub" in tested.text
    assert len(site.sidecar.pings) == pings + 1 and site.sidecar.pings[-1]["signed"]
    assert site.sidecar.pings[-1]["body"] == {"site": site.url, "plugin_version": "1.0.0"}

    save_nonce = re.search(r'name="action" value="kc_sidecar_save">\s*<input[^>]*name="_wpnonce" value="([0-9a-f]+)"', page.text).group(1)
    saved = admin.post(site.url + "/wp-admin/admin-post.php", timeout=30, data={
        "action": "kc_sidecar_save", "_wpnonce": save_nonce, "kc_sidecar_url": site.sidecar.url, "kc_sidecar_secret": "",
        "kc_sidecar_tpl[meet][enabled]": "1", "kc_sidecar_tpl[meet][subject]": "Join: {appointment_date}",
        "kc_sidecar_tpl[meet][body]": "{meet_link}", "kc_sidecar_tpl[moved][subject]": "", "kc_sidecar_tpl[moved][body]": ""})
    assert "Settings saved." in saved.text and SECRET not in saved.text
    assert site.signed("GET", "/status").status_code == 200, "an empty secret field keeps the stored secret"

    forged = admin.post(site.url + "/wp-admin/admin-post.php", data={"action": "kc_sidecar_save", "kc_sidecar_url": "http://evil.test"}, timeout=30)
    assert forged.status_code == 403 and "evil.test" not in admin.get(site.url + "/wp-admin/options-general.php?page=kc-sidecar", timeout=30).text
    doctor = site.login("anna").post(site.url + "/wp-admin/admin-post.php", data={"action": "kc_sidecar_save", "_wpnonce": save_nonce}, timeout=30)
    assert doctor.status_code == 403


def test_bad_signatures_and_stale_requests_change_nothing(site):
    anna = site.users["anna"]
    window = {"doctor_id": anna, "window_start": "2027-06-01T00:00:00Z", "window_end": "2027-06-02T00:00:00Z"}
    good = {**window, "blocks": [{"id": "keep", "start": "2027-06-01T14:00:00Z", "end": "2027-06-01T15:00:00Z"}]}
    assert site.signed("PUT", "/busy", good).status_code == 200
    evil = {**window, "blocks": []}
    expected = [{"start": "2027-06-01 10:00:00", "end": "2027-06-01 11:00:00", "name": "Busy"}]

    attempts = {
        "wrong secret": site.signed("PUT", "/busy", evil, secret="not-the-secret"),
        "other path": site.signed("PUT", "/busy", evil, sign_path=API + "/mail"),
        "tampered body": site.signed("PUT", "/busy", evil, sign_body=json.dumps(good).encode()),
        "stale": site.signed("PUT", "/busy", evil, timestamp=int(time.time()) - 301),
        "future": site.signed("PUT", "/busy", evil, timestamp=int(time.time()) + 301),
        "unsigned": requests.put(site.url + API + "/busy", json=evil, timeout=30),
    }
    for name, response in attempts.items():
        code = "kc_sidecar_stale_request" if name in ("stale", "future") else "kc_sidecar_bad_signature"
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == code and response.json()["data"]["status"] == 401, name
        assert site.busy("anna", "2027-06-01", "2027-06-01", "2027-06-01")["single"] == expected, name

    booked = site.book("anna", "2027-06-02", "09:00").json()["data"]["appointment_id"]
    assert site.signed("PUT", f"/appointments/{booked}/meet", {"url": "https://meet.google.com/x"}).status_code == 200
    assert requests.delete(site.url + API + f"/appointments/{booked}/meet", timeout=30).status_code == 401
    assert site.signed("POST", f"/appointments/{booked}/reschedule", {"start": "2027-06-03T13:00:00Z"}, secret="nope").status_code == 401
    assert site.signed("POST", "/mail", {"to": ["a@clinic.test"], "subject": "s", "text": "t"}, timestamp=1).status_code == 401
    views = site.appointment(booked)
    assert views["list"]["video_consultation"] is True and views["data"]["local"][0] == "2027-06-02 09:00:00"
