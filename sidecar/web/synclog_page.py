"""The sync log page (``/log``) and its CSV export (``/log.csv``).

Filters (query string, all optional): ``doctor`` (KiviCare doctor id), ``direction`` (``to_google`` |
``to_kivicare``), ``action`` (a ``SyncLog.action`` code), ``outcome`` (``ok`` | ``retry`` | ``error`` |
``skipped``, or ``problems`` = error or retry), ``period`` (``1h`` | ``24h`` | ``7d`` | ``30d``) or a range
``from`` / ``to`` (``YYYY-MM-DDTHH:MM`` or ``YYYY-MM-DD`` in the clinic's timezone, converted to UTC; a
date alone in ``to`` means the end of that day). A bad value is refused with a message next to its field
(400) and nothing is listed, rather than guessed.

Pages are keyset-paginated, newest first, on ``(at, id)`` (``before`` / ``after`` cursors), so the page
costs the same on the first page and the thousandth with a million rows; the total of matching rows is
counted once per page, up to ``COUNT_CAP`` ("more than 10,000 entries match"): counting a million rows
exactly cost more than the rest of the page and told the reader nothing more. The CSV export streams
every matching row in chunks read the same way: ids and outcomes only (time UTC, doctor id, appointment
id, direction, action, outcome, error class), never a message, so nothing beyond ids leaves the log.
Failures carry their next step (``log_entries.next_step``).

Who sees what: admins and receptionists every row; a doctor only their own (the doctor filter is fixed
to them). Links in next steps are shown only to someone allowed to act there.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone

from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_babel import format_decimal
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..storage.models import Doctor, SyncLog, utcnow
from .common import site_zone
from .log_entries import ACTIONS, DIRECTION_BY_KEY, DIRECTIONS, OUTCOMES, entry_view
from .security import current_user, roles_required

bp = Blueprint("synclog_page", __name__)

PAGE_SIZE = 50
COUNT_CAP = 10_000  # matching rows counted exactly up to this many; beyond, the page says "more than"
CSV_CHUNK = 2000
PERIODS = {"1h": (timedelta(hours=1), _l("Last hour")), "24h": (timedelta(hours=24), _l("Last 24 hours")),
           "7d": (timedelta(days=7), _l("Last 7 days")), "30d": (timedelta(days=30), _l("Last 30 days"))}
OUTCOME_FILTERS = {"problems": ("error", "retry"), "ok": ("ok",), "retry": ("retry",), "error": ("error",),
                   "skipped": ("skipped",)}
_ACTION = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_CURSOR = re.compile(r"^(\d{1,20})\.(\d{1,20})$")
CSV_COLUMNS = ("time_utc", "doctor_id", "appointment_id", "direction", "action", "outcome", "error_class")


# ---- filters -----------------------------------------------------------------------------------------

@dataclass
class LogFilter:
    """What the person asked for, checked. Times are aware UTC; ``errors`` maps a field to its message."""

    doctor_id: int | None = None
    direction: str = ""  # "to_google" | "to_kivicare" | ""
    action: str = ""
    outcome: str = ""  # a key of OUTCOME_FILTERS or ""
    period: str = ""  # a key of PERIODS or ""
    since: datetime | None = None
    until: datetime | None = None
    raw: dict = field(default_factory=dict)  # the values as typed, to show them back
    errors: dict = field(default_factory=dict)
    doctor_fixed: bool = False  # a doctor sees only their own rows

    def where(self, query):
        """``query`` (on ``SyncLog``) narrowed to these filters."""
        if self.doctor_id is not None:
            query = query.where(SyncLog.doctor_id == self.doctor_id)
        if self.direction:
            query = query.where(SyncLog.direction == DIRECTION_BY_KEY[self.direction])
        if self.action:
            query = query.where(SyncLog.action == self.action)
        if self.outcome:
            outcomes = OUTCOME_FILTERS[self.outcome]
            query = query.where(SyncLog.outcome == outcomes[0] if len(outcomes) == 1 else SyncLog.outcome.in_(outcomes))
        if self.since is not None:
            query = query.where(SyncLog.at >= self.since)
        if self.until is not None:
            query = query.where(SyncLog.at <= self.until)
        return query

    def args(self, **extra) -> dict:
        """The query string of these filters (for links to other pages and to the CSV)."""
        values = {k: v for k, v in self.raw.items() if v and not (k == "doctor" and self.doctor_fixed)}
        values.update({k: v for k, v in extra.items() if v})
        return values

    @property
    def active(self) -> bool:
        return any(v for k, v in self.raw.items() if not (k == "doctor" and self.doctor_fixed))


def _parse_moment(text: str, end_of_day: bool, zone) -> datetime:
    """``YYYY-MM-DDTHH:MM`` (or a space, or a date alone) in ``zone`` → aware UTC. Raises ValueError."""
    text = text.strip().replace(" ", "T")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.strptime(text, "%Y-%m-%d").date()
        local = datetime.combine(day, time.max if end_of_day else time.min)
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?", text):
        local = datetime.fromisoformat(text)
        if end_of_day and len(text) == 16:
            local = local.replace(second=59, microsecond=999999)  # "to 14:05" includes 14:05
    else:
        raise ValueError(text)
    return local.replace(tzinfo=zone).astimezone(timezone.utc)


def read_filters(args, user, now: datetime | None = None) -> LogFilter:
    """The filters in ``args`` (a request's query string) for ``user``; never raises: problems go to ``errors``."""
    now = now or utcnow()
    zone, _name = site_zone()
    raw = {name: (args.get(name) or "").strip()[:40] for name in
           ("doctor", "direction", "action", "outcome", "period", "from", "to")}
    found = LogFilter(raw=raw)
    if user.is_doctor:
        found.doctor_id, found.doctor_fixed = user.doctor_id, True
    elif raw["doctor"]:
        if raw["doctor"].isdigit():
            found.doctor_id = int(raw["doctor"])
        else:
            found.errors["doctor"] = _("Choose a doctor from the list.")
    if raw["direction"]:
        if raw["direction"] in DIRECTION_BY_KEY:
            found.direction = raw["direction"]
        else:
            found.errors["direction"] = _("Choose a direction from the list.")
    if raw["action"]:
        if _ACTION.match(raw["action"]):
            found.action = raw["action"]
        else:
            found.errors["action"] = _("Choose an action from the list.")
    if raw["outcome"]:
        if raw["outcome"] in OUTCOME_FILTERS:
            found.outcome = raw["outcome"]
        else:
            found.errors["outcome"] = _("Choose an outcome from the list.")
    if raw["period"]:
        if raw["period"] in PERIODS:
            found.period = raw["period"]
            found.since = now - PERIODS[raw["period"]][0]
        else:
            found.errors["period"] = _("Choose a period from the list.")
    for name, end_of_day in (("from", False), ("to", True)):
        if not raw[name]:
            continue
        try:
            moment = _parse_moment(raw[name], end_of_day, zone)
        except ValueError:
            found.errors[name] = _("Use a date and time like 2025-03-04 14:30 (or just a date).")
            continue
        if name == "from":
            found.since = max(found.since, moment) if found.since else moment
        else:
            found.until = moment
    if found.since and found.until and found.since > found.until and not found.errors:
        found.errors["to"] = _("The end of the range is before its start.")
    return found


# ---- cursors -------------------------------------------------------------------------------------------

def cursor_of(entry: SyncLog) -> str:
    """``<microseconds since the epoch, UTC>.<id>``: where a page starts or ends."""
    at = entry.at.astimezone(timezone.utc)
    return f"{int((at - EPOCH) / timedelta(microseconds=1))}.{entry.id}"


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_cursor(text: str) -> tuple[datetime, int] | None:
    """``(at aware UTC, id)`` from ``cursor_of``'s text; None for anything else (ignored, never an error)."""
    match = _CURSOR.match(text or "")
    if not match:
        return None
    try:
        return EPOCH + timedelta(microseconds=int(match.group(1))), int(match.group(2))
    except OverflowError:
        return None


def older_than(at: datetime, entry_id: int):
    """Rows after ``(at, id)`` in newest-first order. Written as a range on ``at`` plus a tie-break so the
    ``at`` index bounds the read (a row-value or OR form may scan from the newest row on some databases)."""
    return (SyncLog.at <= at) & ((SyncLog.at < at) | (SyncLog.id < entry_id))


def newer_than(at: datetime, entry_id: int):
    """Rows before ``(at, id)`` in newest-first order (the way back to newer pages)."""
    return (SyncLog.at >= at) & ((SyncLog.at > at) | (SyncLog.id > entry_id))


# ---- rows -----------------------------------------------------------------------------------------------

def page_of(filters: LogFilter, before: str = "", after: str = "") -> dict:
    """One page of matching rows, newest first: ``{"entries": [SyncLog], "total", "more_than_cap": bool,
    "older": cursor | "", "newer": cursor | "", "first_page": bool}``. ``total`` is exact up to
    ``COUNT_CAP``; beyond it ``more_than_cap`` is true and ``total`` is ``COUNT_CAP``. Two queries (the page,
    the count, which reads at most ``COUNT_CAP`` + 1 rows)."""
    base = filters.where(SyncLog.select())
    start_after = parse_cursor(after)
    start_before = parse_cursor(before)
    if start_after:  # going back to newer rows: read upwards, then show newest first
        rows = list(base.where(newer_than(*start_after)).order_by(SyncLog.at.asc(), SyncLog.id.asc())
                    .limit(PAGE_SIZE + 1))
        has_newer = len(rows) > PAGE_SIZE
        rows = list(reversed(rows[:PAGE_SIZE]))
        has_older = True
    else:
        query = base
        if start_before:
            query = query.where(older_than(*start_before))
        rows = list(query.order_by(SyncLog.at.desc(), SyncLog.id.desc()).limit(PAGE_SIZE + 1))
        has_older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        has_newer = bool(start_before)
    if start_after and not rows:  # nothing newer any more: show the newest page
        return page_of(filters)
    counted = filters.where(SyncLog.select(SyncLog.id)).limit(COUNT_CAP + 1).count()  # COUNT over a LIMIT
    return {"entries": rows, "total": min(counted, COUNT_CAP), "more_than_cap": counted > COUNT_CAP,
            "first_page": not has_newer,
            "older": cursor_of(rows[-1]) if rows and has_older else "",
            "newer": cursor_of(rows[0]) if rows and has_newer else ""}


def _choices(filters: LogFilter) -> dict:
    actions = sorted(((code, str(label)) for code, label in ACTIONS.items()), key=lambda item: item[1].lower())
    seen_labels: set[str] = set()
    unique = []
    for code, label in actions:  # two codes may share words (a job kind and its log action)
        unique.append((code, label if label not in seen_labels else f"{label} ({code})"))
        seen_labels.add(label)
    if filters.action and filters.action not in ACTIONS:
        unique.append((filters.action, filters.action))
    return {"actions": unique,
            "directions": [(key, str(label)) for key, label in DIRECTIONS.values()],
            "outcomes": [("problems", _("Failed or retrying"))] + [(k, str(v)) for k, v in OUTCOMES.items()],
            "periods": [(k, str(label)) for k, (_delta, label) in PERIODS.items()]}


# ---- views ------------------------------------------------------------------------------------------------

@bp.route("/log")
@roles_required("admin", "receptionist", "doctor")
def index():
    """The log page: filters, one page of entries, links to newer and older pages (400 for bad filters)."""
    user = current_user()
    filters = read_filters(request.args, user)
    zone, zone_name = site_zone()
    doctors = list(Doctor.select(Doctor.id, Doctor.name).order_by(Doctor.name, Doctor.id).tuples())
    names = {doctor_id: name or _("Doctor #%(id)s", id=doctor_id) for doctor_id, name in doctors}
    page = None
    if not filters.errors:
        page = page_of(filters, before=request.args.get("before", ""), after=request.args.get("after", ""))
        page["rows"] = [entry_view(e, names, user) for e in page["entries"]]
    return render_template("log/index.html", filters=filters, page=page, doctors=doctors, names=names,
                           own=user.is_doctor, zone_name=zone_name, choices=_choices(filters),
                           page_size=PAGE_SIZE, count_cap=format_decimal(COUNT_CAP)), 400 if filters.errors else 200


def _csv_cell(value) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_rows(filters: LogFilter):
    """The CSV text of every matching row, newest first, in chunks (a header line first)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    cursor = None
    while True:
        query = filters.where(SyncLog.select(SyncLog.id, SyncLog.at, SyncLog.doctor_id, SyncLog.appointment_id,
                                             SyncLog.direction, SyncLog.action, SyncLog.outcome, SyncLog.error_class))
        if cursor is not None:
            query = query.where(older_than(*cursor))
        rows = list(query.order_by(SyncLog.at.desc(), SyncLog.id.desc()).limit(CSV_CHUNK))
        if not rows:
            return
        out = io.StringIO()
        writer = csv.writer(out)
        for e in rows:
            writer.writerow([e.at.astimezone(timezone.utc).isoformat(), e.doctor_id or "", _csv_cell(e.appointment_id),
                             DIRECTIONS.get(e.direction, (e.direction,))[0], _csv_cell(e.action), e.outcome,
                             _csv_cell(e.error_class)])
        yield out.getvalue()
        cursor = (rows[-1].at, rows[-1].id)


@bp.route("/log.csv")
@roles_required("admin", "receptionist", "doctor")
def export_csv():
    """The filtered log as CSV (streamed; ids and outcomes only). Bad filters: 400 with the messages."""
    filters = read_filters(request.args, current_user())
    if filters.errors:
        return Response("\n".join(f"{name}: {message}" for name, message in filters.errors.items()) + "\n",
                        status=400, mimetype="text/plain")
    name = f"sync-log-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(stream_with_context(csv_rows(filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})


__all__ = ["bp", "LogFilter", "read_filters", "page_of", "csv_rows", "entry_view", "PAGE_SIZE", "COUNT_CAP"]
