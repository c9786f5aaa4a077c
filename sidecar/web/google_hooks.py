"""``POST /hooks/google``: Google Calendar push notifications (events.watch channels).

Google sends no body, only headers (NOTES.md "Push: headers"). The channel token is checked in
constant time; an unknown channel gets 200 (so Google stops retrying), a forged token 403, and a
transient failure 503 (Google retries 5xx with backoff). A notification is only a reason to pull
that calendar now; the regular poll remains the backstop.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, request

log = logging.getLogger(__name__)

bp = Blueprint("google_hooks", __name__)


@bp.post("/hooks/google")
def notification():
    runtime = current_app.extensions["sidecar_runtime"]
    try:
        outcome = runtime.bridge.inbound.on_notification(
            request.headers.get("X-Goog-Channel-ID", ""), request.headers.get("X-Goog-Channel-Token", ""),
            request.headers.get("X-Goog-Resource-State", ""))
    except Exception:  # e.g. the database is busy: Google retries 5xx
        log.exception("could not handle a Google notification")
        return {"ok": False}, 503
    if outcome == "refused":
        log.warning("refused a Google notification with a wrong channel token")
        return {"ok": False, "error": "bad_channel_token"}, 403
    return {"ok": True, "outcome": outcome}, 200
