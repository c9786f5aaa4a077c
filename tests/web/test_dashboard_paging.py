"""The dashboard's doctors table at clinic size (issue 7, scenario e): 50 doctors a page (``?page=N``), doctors
needing attention first, a search by name or e-mail (``?q=``), a summary line over every doctor so paging hides
nothing, and the costly figures read for the doctors of the page only, in a fixed number of queries."""

from __future__ import annotations

import re
from datetime import timedelta

from sidecar.storage.models import BusyBlock, Conflict, Connection, Doctor, Job, SyncLog, utcnow

from .conftest import count_queries, text_of


def _doctors(count: int, first: int = 100) -> dict[int, Connection]:
    """``count`` connected doctors named "Doctor 000"… (by name, in id order), each with a log row of today."""
    now = utcnow()
    conns = {}
    for n in range(count):
        doctor_id = first + n
        Doctor.create(id=doctor_id, name=f"Doctor {n:03d}", email=f"doctor{n:03d}@clinic.test")
        conns[doctor_id] = Connection.create(doctor=doctor_id, calendar_id=f"cal{n}", calendar_name="Clinic",
                                             state="active", last_sync_at=now, refresh_token="", scopes="",
                                             sync_confirmed_at=now - timedelta(days=1))
        SyncLog.create(at=now - timedelta(minutes=5), doctor_id=doctor_id, action="create", outcome="ok")
    return conns


def _row_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="doctor-row-(\d+)"', page)]


def _pager(page: str) -> str:
    found = re.search(r'<nav class="pager" aria-label="Pages of the doctors table">.*?</nav>', page, re.S)
    return found.group(0) if found else ""


def test_fifty_doctors_a_page_with_links_to_the_others(admin_client):
    _doctors(120)
    first = admin_client.get("/").text
    assert _row_ids(first) == list(range(100, 150))
    assert "120 doctors: 120 syncing, 0 need attention, 0 not syncing" in text_of(first)
    assert "page 1 of 3" in text_of(first)
    pager = _pager(first)
    assert 'rel="next" href="/?page=2#doctors"' in pager and 'href="/?page=3#doctors">Last' in pager
    assert 'rel="prev"' not in pager and "Page 1 of 3" in text_of(pager)
    last = admin_client.get("/?page=3").text
    assert _row_ids(last) == list(range(200, 220))
    assert 'rel="prev" href="/?page=2#doctors"' in _pager(last) and 'rel="next"' not in _pager(last)
    # The summary above the chart still counts every doctor, not one page.
    assert "120 doctors" in text_of(last) and "of 120" in text_of(last)
    # A page out of range, or not a number, shows the nearest page rather than nothing or an error.
    assert _row_ids(admin_client.get("/?page=99").text) == list(range(200, 220))
    for bad in ("0", "-1", "abc", "1e9", "9" * 30):
        answer = admin_client.get(f"/?page={bad}")
        assert answer.status_code == 200 and _row_ids(answer.text) == list(range(100, 150)), bad


def test_one_page_needs_no_pager(admin_client):
    _doctors(3)
    page = admin_client.get("/").text
    assert _row_ids(page) == [100, 101, 102] and _pager(page) == "" and 'id="doctors-shown"' not in page
    assert "3 doctors: 3 syncing, 0 need attention, 0 not syncing" in text_of(page)


def test_doctors_needing_attention_come_first_then_by_name(admin_client):
    conns = _doctors(70)
    Doctor.create(id=5, name="Zoe Unconnected")
    Connection.update(state="needs_reconnect").where(Connection.doctor == 169).execute()
    Connection.update(sync_confirmed_at=None).where(Connection.doctor == 168).execute()  # waiting to confirm
    Conflict.create(kind="both_changed", doctor_id=167, state="open")
    Job.create(kind="push", dedupe_key=f"push:501:{conns[166].id}", state="failed", attempts=5)  # given up
    Job.create(kind="busy", dedupe_key="busy:165", state="pending", attempts=2)  # failing, tried again
    Job.create(kind="push", dedupe_key=f"push:502:{conns[164].id}", state="pending")  # only waiting: fine
    Connection.update(scopes="openid email", refresh_token="x").where(Connection.doctor == 163).execute()
    Connection.update(state="disconnected").where(Connection.doctor == 162).execute()
    page = admin_client.get("/").text
    ids = _row_ids(page)
    assert ids[:6] == [163, 165, 166, 167, 168, 169] and ids[6:] == list(range(100, 144))
    assert "71 doctors: 63 syncing, 6 need attention, 2 not syncing" in text_of(page)
    row = text_of(re.search(r'<tr id="doctor-row-166".*?</tr>', page, re.S).group(0))
    assert "1 job failing" in row
    assert 'href="/log?doctor=166&amp;outcome=problems"' in page
    # The rest by name: Zoe (no connection, nothing to act on) is on the last page.
    assert 5 in _row_ids(admin_client.get("/?page=2").text)


def test_search_by_name_or_email(admin_client):
    _doctors(120)
    Doctor.create(id=7, name="Anna MÜLLER", email="a.mueller@clinic.test")
    page = admin_client.get("/?q=müller").text
    assert _row_ids(page) == [7] and "1 doctor matches “müller”" in text_of(page)
    assert _row_ids(admin_client.get("/?q=A.Mueller@").text) == [7]  # e-mail, any case
    assert _row_ids(admin_client.get("/?q=  müller  ").text) == [7]
    form = re.search(r'<form method="get" action="/#doctors" class="doctor-search".*?</form>', page, re.S).group(0)
    assert '<label for="doctor-q">Find a doctor</label>' in form and 'id="doctor-q" name="q"' in form
    assert 'value="müller"' in form and "Show every doctor" in form
    # Pages of a search keep it.
    found = admin_client.get("/?q=doctor0").text  # doctor000 … doctor099 by e-mail
    assert "100 doctors match “doctor0”" in text_of(found) and len(_row_ids(found)) == 50
    assert 'href="/?page=2&amp;q=doctor0#doctors"' in _pager(found)
    assert _row_ids(admin_client.get("/?q=doctor0&page=2").text) == list(range(150, 200))
    # Nothing found: said so, with the way back; the summary still counts every doctor.
    none = admin_client.get("/?q=<nobody>").text
    assert _row_ids(none) == [] and "No doctor's name or e-mail contains “<nobody>”." in text_of(none)
    assert "&lt;nobody&gt;" in none and "<nobody>" not in none
    assert "121 doctors" in text_of(none) and "No doctors yet" not in text_of(none)


def test_figures_of_a_later_page_are_its_doctors_own(admin_client):
    conns = _doctors(60)
    now = utcnow()
    SyncLog.create(at=now - timedelta(minutes=1), doctor_id=155, action="create", outcome="error")
    for n in range(2):
        BusyBlock.create(connection=conns[155], doctor_id=155, calendar_id="cal55", event_id=f"busy{n}",
                         start_utc=now + timedelta(hours=n), end_utc=now + timedelta(hours=n, minutes=30))
    Job.create(kind="busy", dedupe_key="busy:155", state="pending")
    page = admin_client.get("/?page=2").text
    row = text_of(re.search(r'<tr id="doctor-row-155".*?</tr>', page, re.S).group(0))
    assert "KiviCare → Google: 1 synced, 1 failed" in row
    cells = re.findall(r'<td class="num[^"]*" data-label="(?:Waiting|Busy blocks)">(\d+)</td>',
                       re.search(r'<tr id="doctor-row-155".*?</tr>', page, re.S).group(0))
    assert cells == ["1", "2"]


def _fewest_queries(client, path: str) -> int:
    """The fewer of two counts: the settings are re-read at most once a second (``SettingsStore.ttl``), so on
    a loaded machine one of the two may include that read."""
    return min(count_queries(client, path), count_queries(client, path))


def test_queries_stay_fixed_beyond_one_page(admin_client):
    _doctors(2)
    admin_client.get("/")
    few = _fewest_queries(admin_client, "/")
    _doctors(150, first=300)
    assert _fewest_queries(admin_client, "/") == few
    assert _fewest_queries(admin_client, "/?page=3&q=doctor") == few


def test_first_syncs_running_show_whatever_the_page(admin_client, rt):
    conns = _doctors(60)
    SyncLog.create(doctor_id=159, action="connect", outcome="ok")  # started a minute ago
    from sidecar.storage.models import Appointment
    now = utcnow()
    Appointment.create(id="900", doctor_id=159, start_utc=now + timedelta(days=1), end_utc=now + timedelta(days=1),
                       status=1, list_hash="h", data={})
    Job.create(kind="push", dedupe_key=f"push:900:{conns[159].id}", state="pending")
    page = admin_client.get("/").text  # Doctor 059 is on page 2
    assert 159 not in _row_ids(page)
    assert '<progress id="progress-159" max="1" value="0"' in page and "Doctor 059 · first sync" in text_of(page)
