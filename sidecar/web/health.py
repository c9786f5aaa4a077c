"""``/healthz``: a check for load balancers and monitors (no sign-in, no details beyond ok/error)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from ..storage import database

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.route("/healthz")
def healthz():
    """``200 {"status": "ok", "database": "ok"}``, or ``503`` with ``"error"`` when the database does not answer."""
    try:
        database.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # any driver error means "not healthy"; the class name goes to the log only
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        return jsonify({"status": "error", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"})
