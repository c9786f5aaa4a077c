"""What the frame around every page needs: the main navigation by role, the brand link, the page's
language, the clinic's timezone for headings, and the site icon.

The navigation, in the order the header shows it:

- admins: Dashboard, Connect doctors, Sync log, Conflicts, Settings, and the audit trail when present;
- receptionists: Dashboard, Sync log, Conflicts (read-only pages);
- doctors: My calendar, Sync log (their own rows), Conflicts (their own).

``install(app)`` makes these helpers available to every template. An entry whose page is not part of this
app (a blueprint not registered) is left out rather than breaking every page.

The site icon is ``static/favicon.svg`` (the header's brand mark). Pages carry it inline, as a ``data:`` URL
made from that file (``favicon_href()``): a separate request for it would be cut short whenever someone
clicks on before it arrives, and the browser tests count any cut-short request as a broken page. Browsers,
feed readers and bookmarks that ask for ``/favicon.ico`` anyway get the same file instead of a 404: a second
address of the ``static`` endpoint, so it is as public, and cached, as every other static file.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path

from flask import Flask, current_app, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from .common import site_zone
from .security import current_user

# (endpoint, label, roles, "current" when the request's blueprint is this one, or None: only this endpoint)
ITEMS = (
    ("dashboard.index", _l("Dashboard"), ("admin", "receptionist"), "dashboard"),
    ("connect.me", _l("My calendar"), ("doctor",), None),
    ("connect.index", _l("Connect doctors"), ("admin",), "connect"),
    ("synclog_page.index", _l("Sync log"), ("admin", "receptionist", "doctor"), "synclog_page"),
    ("conflicts.index", _l("Conflicts"), ("admin", "receptionist", "doctor"), "conflicts"),
    ("settings.index", _l("Settings"), ("admin",), "settings"),
    ("audit.index", _l("Audit trail"), ("admin",), "audit"),
)


def nav_items() -> list[dict]:
    """``[{"endpoint", "label", "url", "current", "id"}]`` for the signed-in person; [] for nobody."""
    user = current_user()
    if user is None:
        return []
    known = current_app.view_functions
    items = []
    for endpoint, label, roles, blueprint in ITEMS:
        if user.role not in roles or endpoint not in known:
            continue
        current = (request.blueprint == blueprint) if blueprint else (request.endpoint == endpoint)
        items.append({"endpoint": endpoint, "label": label, "url": url_for(endpoint), "current": current,
                      "id": "nav-" + endpoint.split(".")[0].replace("_page", "").replace("synclog", "log")})
    return items


def home_url() -> str:
    """Where the brand link leads: the first page of the person's navigation (the sign-in page for nobody)."""
    items = nav_items()
    return items[0]["url"] if items else url_for("auth.login")


def page_language() -> str:
    """The BCP 47 tag of the page's language (``<html lang>``): Flask-Babel's locale for this request."""
    return str(get_locale() or "en").replace("_", "-")


FAVICON = "favicon.svg"  # in the app's static folder


@lru_cache(maxsize=4)
def _icon_data_url(path: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def favicon_href() -> str:
    """The site icon for ``<link rel="icon">``: ``static/favicon.svg`` as a ``data:image/svg+xml;base64,…``
    URL (read once; the Content-Security-Policy allows ``data:`` images). Raises OSError if the file is gone."""
    return _icon_data_url(str(Path(current_app.static_folder) / FAVICON))


def site_timezone_name() -> str:
    """The clinic's IANA timezone name (``Europe/Paris``), for a heading over times shown with ``|clock``."""
    return site_zone()[1]


def install(app: Flask) -> None:
    """Give every template ``nav_items()``, ``home_url()``, ``page_language()``, ``site_timezone_name()`` and
    ``favicon_href()``; answer ``GET /favicon.ico`` with ``static/favicon.svg`` (``image/svg+xml``, which
    every current browser takes as an icon whatever the address says)."""
    app.add_template_global(nav_items, "nav_items")
    app.add_template_global(home_url, "home_url")
    app.add_template_global(page_language, "page_language")
    app.add_template_global(site_timezone_name, "site_timezone_name")
    app.add_template_global(favicon_href, "favicon_href")
    # The static endpoint's own view, so the first-run gate, the role checks and the cache headers treat it
    # like any static file. Being the rule for filename=favicon.svg, it is also the icon's canonical address:
    # url_for builds it, and Werkzeug redirects /static/favicon.svg there.
    app.add_url_rule("/favicon.ico", "static", app.view_functions["static"], defaults={"filename": FAVICON})


__all__ = ["install", "nav_items", "home_url", "page_language", "site_timezone_name", "favicon_href", "ITEMS"]
