"""KiviCare's appointment list read in pages (``bridge.list_page_size``, issue 7): the first pushes of a large
first sync start after one page; pages that shift while they are read (a booking, a deletion) neither lose
nor delete anything.

Real sandboxes on loopback, a real SQLite file. KiviCare's default order is ``a.id DESC`` (API.md 2.2), as
the sandbox's: a new booking comes first and pushes every row one place further; a deletion pulls them back.
"""

from __future__ import annotations

import threading
import time

import pytest

from wp_bridge.bridge import FIRST_SYNC_PAGE

from .conftest import ANNA, connect
from .test_poll_windows import Clock, book, detail_reads, listings, settle
from .test_sync_engine import at, our_events

PAGE = 10


@pytest.fixture
def setup(make_runtime, kivicare, google):
    """Anna connected, 35 appointments of hers booked (with the sandbox's own, ~4 pages of 10)."""
    runtime = make_runtime(**{"bridge.list_page_size": PAGE})
    clock = Clock()
    runtime.bridge.clock = clock
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    booked = [book(runtime, kivicare, at(1 + n % 7, 7 + n // 7, 10)) for n in range(35)]
    return runtime, connection, clock, booked


def pages_asked(kivicare) -> list[tuple[str, str]]:
    """``(perPage, page)`` of each list request, in order."""
    return [(r["query"].get("perPage"), r["query"].get("page")) for r in listings(kivicare)]


def pages_by_span(kivicare) -> dict[str, list[str]]:
    """The pages asked of each listed span (``date_from``), in order: near first, then far."""
    spans: dict[str, list[str]] = {}
    for r in listings(kivicare):
        spans.setdefault(r["query"]["date_from"], []).append(r["query"].get("page"))
    return spans


def live(google, connection, appointment_id) -> int:
    return len(our_events(google, connection.calendar_id, appointment_id))


def test_a_window_is_listed_page_by_page_and_every_row_is_synced(setup, kivicare, google):
    runtime, connection, clock, booked = setup
    kivicare.reset_requests()
    report = runtime.bridge.poll("all")
    settle(runtime)
    asked = pages_asked(kivicare)
    assert all(per == str(PAGE) for per, _ in asked)
    near, far = pages_by_span(kivicare).values()  # the 35 are in the near window (days 1-7)
    assert len(near) >= 4 and near == [str(n) for n in range(1, len(near) + 1)] and far == ["1"]
    assert report.listed >= 35 and detail_reads(kivicare) == []  # nothing taken for missing
    assert all(live(google, connection, a) == 1 for a in booked)
    # The next poll lists the same pages and finds nothing to do.
    clock.advance(30)
    kivicare.reset_requests()
    again = runtime.bridge.poll("all")
    assert again.enqueued == 0 and again.missing_checked == 0 and len(pages_asked(kivicare)) == len(asked)


def test_a_page_size_of_zero_lists_everything_in_one_request(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.list_page_size": 0})
    connect(runtime, google, ANNA)
    kivicare.reset_requests()
    runtime.bridge.poll("all")
    assert pages_asked(kivicare) == [("all", None), ("all", None)]  # near, then far


@pytest.mark.parametrize("change", ["book", "delete"])
def test_pages_that_shift_while_read_lose_nothing_and_delete_only_what_kivicare_deleted(setup, kivicare, google,
                                                                                       change):
    """Each page is held 0.3 s on the wire; after the first one, staff book or delete an appointment. A
    booking shifts a row onto the next page (it comes twice); a deletion pulls one back onto a page already
    read (it is missing from the listing, so KiviCare is asked about it before anything is done)."""
    runtime, connection, clock, booked = setup
    runtime.bridge.poll("all")
    settle(runtime)
    assert all(live(google, connection, a) == 1 for a in booked)
    clock.advance(30)
    kivicare.latency_per_row = 0.03
    kivicare.reset_requests()
    try:
        reports = []
        poll = threading.Thread(target=lambda: reports.append(runtime.bridge.poll("all")))
        poll.start()
        while not listings(kivicare):
            time.sleep(0.01)
        if change == "book":
            added = book(runtime, kivicare, at(2, 18, 10))
        else:
            gone = booked[-1]  # the newest: on the first page, already read
            kivicare.delete_appointment(gone)
        poll.join(30)
        assert not poll.is_alive()
    finally:
        kivicare.latency_per_row = 0.0
    settle(runtime)
    if change == "delete":
        # The row pulled back onto page 1 was missing from the listing: asked about, found, kept.
        assert reports[0].missing_checked >= 1 and reports[0].deleted == 0
        assert all(live(google, connection, a) == 1 for a in booked)
    else:
        assert reports[0].missing_checked == 0  # the row pushed onto page 2 came twice, counted once
    # The next listing shows KiviCare as it is now: the booking (page 1 was read before it existed) is
    # synced, the deleted appointment's event goes, every other one stays.
    clock.advance(30)
    runtime.bridge.poll("all")
    settle(runtime)
    if change == "delete":
        assert live(google, connection, gone) == 0
        assert all(live(google, connection, a) == 1 for a in booked if a != gone)
    else:
        assert all(live(google, connection, a) == 1 for a in [*booked, added])


def test_the_first_page_can_be_asked_in_small_pages_and_then_whole_ones_losing_no_row(setup, kivicare):
    runtime, _connection, _clock, booked = setup
    near, _far = runtime.bridge.poll_windows()
    client = runtime.kivicare()
    whole = [a.id for page in client.list_appointment_pages(near.first_day, near.last_day, PAGE) for a in page.appointments]
    kivicare.reset_requests()
    small = [a.id for page in client.list_appointment_pages(near.first_day, near.last_day, PAGE, start_size=3)
             for a in page.appointments]
    asked = pages_asked(kivicare)
    # Pages of 3, 3, 6 (each as large as all before it), then of 10 from row 10 on: rows 11 and 12 come twice.
    assert asked[:4] == [("3", "1"), ("3", "2"), ("6", "2"), ("10", "2")]
    assert all(per == "10" for per, _ in asked[3:])
    assert list(dict.fromkeys(small)) == whole and len(small) == len(whole) + 2 and set(booked) <= set(whole)


def test_a_first_sync_asks_its_first_page_in_small_pages_and_later_polls_whole_pages(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.list_page_size": 2 * FIRST_SYNC_PAGE})
    connect(runtime, google, ANNA)
    kivicare.reset_requests()
    runtime.bridge.poll("all")
    assert pages_asked(kivicare) == [(str(FIRST_SYNC_PAGE), "1")] * 2  # near, far: nothing known yet (< 250 rows)
    kivicare.reset_requests()
    runtime.bridge.poll("all")
    assert pages_asked(kivicare) == [(str(2 * FIRST_SYNC_PAGE), "1")] * 2
