"""The sync log page (/log) and its CSV export (/log.csv): filters, keyset pages with a total, who sees
which rows, next steps for failures, bad input, and a query count that does not grow with the log.

Real SQLite file, real Flask app; WordPress roles come from real signed SSO tokens (tests/web/test_sso)."""

from __future__ import annotations

import ast
import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest

from sidecar.config import ROOT
from sidecar.storage.models import Doctor, SyncLog, utcnow
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, MARC

from .conftest import ADMIN, PASSWORD, admin, count_queries, text_of
from .test_sso import SECRET, signed_in

PARIS = "Europe/Paris"


@pytest.fixture
def logged(rt):
    """An app with two doctors (the clinic in Paris) and a few log rows of each kind."""
    rt.cfg.set("companion.secret", SECRET)
    rt.set_state("site_timezone", PARIS)
    create_admin(rt, ADMIN, PASSWORD)
    Doctor.create(id=ANNA, name="Anna Schmidt")
    Doctor.create(id=MARC, name="Marc Dubois")
    now = utcnow()
    rows = {
        "auth": SyncLog.create(at=now - timedelta(minutes=5), doctor_id=ANNA, appointment_id="501", action="push",
                               outcome="error", error_class="CalendarAuthError",
                               message="Google refused this doctor's access."),
        "outage": SyncLog.create(at=now - timedelta(minutes=10), doctor_id=MARC, appointment_id="777", action="push",
                                 outcome="retry", error_class="CalendarUnavailable", message="503"),
        "wp": SyncLog.create(at=now - timedelta(minutes=20), doctor_id=MARC, appointment_id="778", action="cancel",
                             outcome="error", error_class="KiviCareAuthError", direction="google→kivicare"),
        "bad": SyncLog.create(at=now - timedelta(minutes=30), appointment_id="900", action="read-appointment",
                              outcome="skipped", message="no start time"),
        "ok": SyncLog.create(at=now - timedelta(days=3), doctor_id=ANNA, appointment_id="502", action="create",
                             outcome="ok"),
    }
    app = create_app(rt)
    app.rows = rows
    return app


def listed(html: str) -> list[str]:
    """Appointment ids in the order the page lists them."""
    return re.findall(r'<td data-label="Appointment" class="mono">([^<]*)</td>', html)


def test_every_entry_newest_first_with_words_and_next_steps(logged):
    page = admin(logged).get("/log")
    assert page.status_code == 200
    assert listed(page.text) == ["501", "777", "778", "900", "502"]
    text = text_of(page.text)
    assert "5 entries match" in text and "Times are in Europe/Paris" in text
    auth = text_of(re.search(r'<tr id="entry-%d".*?</tr>' % logged.rows["auth"].id, page.text, re.S).group(0))
    assert "Anna Schmidt" in auth and "KiviCare → Google" in auth and "Sending the appointment to Google" in auth
    assert "Failed" in auth and "Reconnect the doctor's Google Calendar" in auth and "CalendarAuthError" in auth
    assert f'href="/doctors/{ANNA}">Open the doctor&#39;s page</a>' in page.text
    assert "Nothing to do: the sidecar tries again by itself." in text
    assert "Check the KiviCare user and application password" in text and 'href="/settings#kivicare"' in page.text
    assert "Fix the appointment in KiviCare" in text  # the unreadable row
    ok = re.search(r'<tr id="entry-%d".*?</tr>' % logged.rows["ok"].id, page.text, re.S).group(0)
    assert "next-step" not in ok  # nothing to do about a success


@pytest.mark.parametrize("query, expected", [
    (f"doctor={MARC}", ["777", "778"]),
    ("direction=to_kivicare", ["778"]),
    ("direction=to_google", ["501", "777", "900", "502"]),
    ("action=push", ["501", "777"]),
    ("outcome=error", ["501", "778"]),
    ("outcome=problems", ["501", "777", "778"]),
    ("outcome=skipped", ["900"]),
    ("period=24h", ["501", "777", "778", "900"]),
    (f"doctor={ANNA}&outcome=ok", ["502"]),
    ("action=alert", []),
])
def test_filters(logged, query, expected):
    page = admin(logged).get("/log?" + query)
    assert page.status_code == 200
    assert listed(page.text) == expected
    if not expected:
        assert "No entries match these filters." in text_of(page.text)


def test_time_range_is_read_in_the_clinics_timezone(logged):
    SyncLog.delete().execute()
    # 22:30 UTC on 3 March is 23:30 in Paris: still 3 March there; 23:30 UTC is already 4 March in Paris.
    SyncLog.create(at=datetime(2025, 3, 3, 22, 30, tzinfo=timezone.utc), appointment_id="A", action="create", outcome="ok")
    SyncLog.create(at=datetime(2025, 3, 3, 23, 30, tzinfo=timezone.utc), appointment_id="B", action="create", outcome="ok")
    client = admin(logged)
    assert listed(client.get("/log?from=2025-03-03&to=2025-03-03").text) == ["A"]
    assert listed(client.get("/log?from=2025-03-04").text) == ["B"]
    assert listed(client.get("/log?from=2025-03-03T23:30&to=2025-03-04T00:30").text) == ["B", "A"]
    assert listed(client.get("/log?to=2025-03-03T23:29").text) == []


@pytest.mark.parametrize("query, field, message", [
    ("from=yesterday", "from", "Use a date and time like 2025-03-04 14:30"),
    ("to=2025-13-40", "to", "Use a date and time like"),
    ("from=2025-03-05&to=2025-03-04", "to", "The end of the range is before its start."),
    ("outcome=maybe", "outcome", "Choose an outcome from the list."),
    ("direction=sideways", "direction", "Choose a direction from the list."),
    ("doctor=abc", "doctor", "Choose a doctor from the list."),
    ("action=%3Cscript%3E", "action", "Choose an action from the list."),
    ("period=forever", "period", "Choose a period from the list."),
])
def test_bad_filters_are_refused_with_a_message_next_to_the_field(logged, query, field, message):
    client = admin(logged)
    page = client.get("/log?" + query)
    assert page.status_code == 400
    assert f'id="f-{field}-error">{message}' in page.text.replace("&#34;", '"') or message in text_of(page.text)
    assert f'id="f-{field}"' in page.text and 'aria-invalid="true"' in page.text
    assert listed(page.text) == [] and "<script>" not in page.text
    export = client.get("/log.csv?" + query)
    assert export.status_code == 400 and message.split(" ")[0] in export.text


def test_keyset_pages_with_a_total(logged):
    SyncLog.delete().execute()
    base = utcnow() - timedelta(hours=5)
    same_moment = base + timedelta(minutes=60)
    for n in range(120):
        # Ten rows share one instant: the id breaks the tie, so no row is shown twice or skipped.
        at = same_moment if 55 <= n < 65 else base + timedelta(minutes=n)
        SyncLog.create(at=at, doctor_id=ANNA, appointment_id=f"{n:03d}", action="create", outcome="ok")
    client = admin(logged)
    seen, page, pages = [], client.get("/log"), 0
    assert "120 entries match" in text_of(page.text)
    while True:
        pages += 1
        seen += listed(page.text)
        older = re.search(r'rel="next" href="([^"]+)"', page.text)
        if not older:
            break
        page = client.get(older.group(1).replace("&amp;", "&"))
        assert "120 entries match" in text_of(page.text)
    assert pages == 3 and len(seen) == 120 and len(set(seen)) == 120
    # Back to newer pages from the last one.
    newer = re.search(r'rel="prev" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    middle = client.get(newer)
    assert listed(middle.text) == seen[50:100]
    assert 'rel="prev"' in middle.text and 'rel="next"' in middle.text and ">Newest<" in middle.text
    first = client.get(re.search(r'rel="prev" href="([^"]+)"', middle.text).group(1).replace("&amp;", "&"))
    assert listed(first.text) == seen[:50] and 'rel="prev"' not in first.text
    # Filters are kept across pages.
    filtered = client.get(f"/log?doctor={ANNA}&outcome=ok")
    assert f"doctor={ANNA}" in re.search(r'rel="next" href="([^"]+)"', filtered.text).group(1)
    # A cursor that is not one is ignored rather than an error.
    assert listed(client.get("/log?before=nonsense").text)[:1] == [seen[0]]


def test_csv_export_streams_ids_and_outcomes_only(logged):
    SyncLog.create(doctor_id=ANNA, appointment_id="=HYPERLINK(1)", action="create", outcome="ok",
                   message="a message that must not leave the log")
    answer = admin(logged).get(f"/log.csv?doctor={ANNA}")
    assert answer.status_code == 200 and answer.is_streamed
    assert answer.mimetype == "text/csv" and answer.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == ["time_utc", "doctor_id", "appointment_id", "direction", "action", "outcome", "error_class"]
    assert [r[2] for r in rows[1:]] == ["'=HYPERLINK(1)", "501", "502"]  # a formula is defused
    assert rows[2][1:] == [str(ANNA), "501", "to_google", "push", "error", "CalendarAuthError"]
    assert rows[2][0].endswith("+00:00")
    assert "must not leave" not in answer.text and "refused" not in answer.text


def test_csv_export_reads_in_chunks(logged, monkeypatch):
    from sidecar.web import synclog_page
    monkeypatch.setattr(synclog_page, "CSV_CHUNK", 7)
    for n in range(30):
        SyncLog.create(doctor_id=MARC, appointment_id=f"c{n}", action="update", outcome="ok")
    rows = list(csv.reader(io.StringIO(admin(logged).get("/log.csv?action=update").text)))
    assert len(rows) == 31 and len({r[2] for r in rows[1:]}) == 30


def test_a_doctor_sees_only_own_rows_page_and_csv(logged):
    client, _ = signed_in(logged, ["kiviCare_doctor"], uid=ANNA)
    page = client.get(f"/log?doctor={MARC}")  # asking for someone else's rows changes nothing
    assert page.status_code == 200
    assert listed(page.text) == ["501", "502"]
    assert 'id="f-doctor"' not in page.text and "Marc" not in page.text
    assert 'href="/me">Open my calendar page</a>' in page.text  # the reconnect step leads to their own page
    assert "/settings" not in page.text and "/doctors/" not in page.text
    rows = list(csv.reader(io.StringIO(client.get("/log.csv").text)))
    assert {r[1] for r in rows[1:]} == {str(ANNA)}


def test_receptionists_see_everything_but_no_links_to_admin_pages(logged):
    client, _ = signed_in(logged, ["kiviCare_receptionist"], uid=2, name="Claire Martin")
    page = client.get("/log")
    assert page.status_code == 200 and len(listed(page.text)) == 5
    assert "Reconnect the doctor's Google Calendar" in text_of(page.text)
    assert "/settings" not in page.text and "/doctors/" not in page.text and "/connect" not in page.text
    assert client.get("/log.csv").status_code == 200


def test_sign_in_first(logged):
    answer = logged.test_client().get("/log")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
    assert logged.test_client().get("/log.csv").status_code == 302


def test_navigation_links_the_log_for_every_role(logged):
    page = admin(logged).get("/log")
    assert '<a href="/log" id="nav-log" aria-current="page">Sync log</a>' in page.text
    for roles, uid in ((["kiviCare_doctor"], ANNA), (["kiviCare_receptionist"], 2)):
        client, _ = signed_in(logged, roles, uid=uid)
        assert 'id="nav-log"' in client.get("/conflicts").text


def test_names_and_ids_from_kivicare_are_inert(logged):
    Doctor.update(name='<img src=x onerror="alert(1)">').where(Doctor.id == ANNA).execute()
    SyncLog.create(doctor_id=ANNA, appointment_id="<b>9</b>", action="<script>", outcome="error",
                   error_class="<i>x</i>", message="<script>alert(2)</script>")
    page = admin(logged).get("/log")
    assert "<img src=x" not in page.text and "<script>alert" not in page.text and "<b>9</b>" not in page.text
    assert "&lt;img src=x" in page.text and "&lt;script&gt;alert(2)" in page.text
    dashboard = admin(logged).get("/")
    assert "<img src=x" not in dashboard.text and "&lt;img src=x" in dashboard.text


def test_form_controls_are_labelled_and_the_page_has_no_inline_code(logged):
    page = admin(logged).get("/log").text
    for control in re.findall(r'<(?:select|input)[^>]*\bid="([^"]+)"', page):
        assert f'<label for="{control}">' in page, control
    assert 'method="get"' in page and "style=" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # CSP: scripts only from files
    assert page.count("<h1") == 1 and 'class="skip-link" href="#main"' in page


def test_the_query_count_does_not_grow_with_the_log(logged):
    client = admin(logged)
    client.get("/log")

    few = count_queries(client, "/log?outcome=problems")
    for n in range(300):
        SyncLog.create(doctor_id=MARC if n % 2 else ANNA, appointment_id=str(n), action="push", outcome="retry",
                       error_class="CalendarUnavailable")
    for n in range(40):
        Doctor.create(id=1000 + n, name=f"Doctor {n}")
    assert count_queries(client, "/log?outcome=problems") == few <= 10


# ---- every action code the engine logs has words ----------------------------------------------------------

def _strings(node) -> set[str] | None:
    """The string constants an expression can be (``"a"``, ``"a" if x else "b"``); None if not only those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body), _strings(node.orelse)
        return body | orelse if body is not None and orelse is not None else None
    return None


def _called(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def logged_action_codes() -> tuple[dict[str, str], list[str]]:
    """Every ``SyncLog.action`` the code under wp_bridge/ and sidecar/ can write, read from its source:
    ``({code: "file:line"}, [calls that could not be read])``.

    A ``log_sync(action, ...)`` call's action is a string; ``job.kind`` (every kind given to
    ``jobs.enqueue``); or a variable of the calling function: its string assignments, or, for a
    parameter, the strings every call of that function passes for it. ``SyncLog.create(action=...)``
    outside wp_bridge/synclog.py counts too. Anything else is reported as unreadable, so a new way of
    logging cannot slip past this check."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for folder in ("wp_bridge", "sidecar")
             for path in sorted((ROOT / folder).rglob("*.py"))}
    calls = [(path, node) for path, tree in trees.items() for node in ast.walk(tree) if isinstance(node, ast.Call)]
    kinds = {value for _path, call in calls if _called(call) == "enqueue" and call.args
             for value in (_strings(call.args[0]) or ())}
    functions: dict[str, list[ast.FunctionDef]] = {}
    parents: dict[ast.AST, ast.AST] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(node.name, []).append(node)

    def enclosing(node):
        while node in parents and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node = parents[node]
        return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None

    def resolve(node, call) -> set[str] | None:
        found = _strings(node)
        if found is not None:
            return found
        if isinstance(node, ast.Attribute) and node.attr == "kind":
            return set(kinds)
        function = enclosing(call)
        if not isinstance(node, ast.Name) or function is None:
            return None
        name, values = node.id, set()
        for assign in ast.walk(function):
            if isinstance(assign, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in assign.targets):
                strings = _strings(assign.value)
                if strings is None:
                    return None
                values |= strings
        params = [a.arg for a in function.args.args]
        if name in params:
            position = params.index(name) - (1 if params[:1] == ["self"] else 0)
            for _path, other in calls:
                if _called(other) != function.name:
                    continue
                given = ([k.value for k in other.keywords if k.arg == name]
                         or other.args[position:position + 1])
                strings = _strings(given[0]) if given else None
                if strings is None:
                    return None
                values |= strings
        return values or None

    codes: dict[str, str] = {}
    unreadable: list[str] = []
    for path, call in calls:
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if _called(call) == "log_sync" and call.args:
            action = call.args[0]
        elif _called(call) in ("create", "insert") and getattr(call.func, "value", None) is not None \
                and getattr(call.func.value, "id", "") == "SyncLog" and path.name != "synclog.py":
            action = next((k.value for k in call.keywords if k.arg == "action"), None)
            if action is None:
                continue
        else:
            continue
        found = resolve(action, call)
        if found is None:
            unreadable.append(where)
        for code in found or ():
            codes.setdefault(code, where)
    return codes, unreadable


def test_every_action_code_in_the_code_has_words(logged):
    from sidecar.web.log_entries import ACTIONS, NOT_SYNC_WORK, SYNC_WRITES

    codes, unreadable = logged_action_codes()
    assert not unreadable, f"log_sync calls whose action this test cannot read (use a string): {unreadable}"
    # The reader finds plain strings, job kinds, a parameter passed by callers and an assignment.
    assert {"confirm-first-sync", "busy_push", "moved-calendar", "revert-google-edit", "update"} <= set(codes)
    missing = {code: where for code, where in codes.items() if code not in ACTIONS}
    assert not missing, f"action codes without words in sidecar/web/log_entries.py ACTIONS: {missing}"
    assert (SYNC_WRITES | NOT_SYNC_WORK) <= set(ACTIONS)
    with logged.test_request_context():
        labels = [str(label) for label in ACTIONS.values()]
    assert len(set(labels)) == len(labels), "two actions share their words: the Action filter would list both alike"
    assert all(label[:1].isupper() and "-" not in label.split()[0] for label in labels)  # words, not codes


def test_connection_entries_read_as_words_not_codes(logged):
    SyncLog.create(doctor_id=ANNA, action="confirm-first-sync", outcome="ok", message="First sync confirmed")
    SyncLog.create(doctor_id=ANNA, action="connect", outcome="ok")
    client = admin(logged)
    for path in ("/log", "/"):
        page = client.get(path).text
        assert "confirm-first-sync" not in page.replace('value="confirm-first-sync"', "")  # the filter's value only
        assert "First sync confirmed" in text_of(page) and "Calendar connected" in text_of(page)
    row = re.findall(r'<tr id="entry-\d+".*?</tr>', client.get("/log?action=confirm-first-sync").text, re.S)
    assert len(row) == 1 and text_of(row[0]).count("First sync confirmed") == 1  # the note repeats no words
