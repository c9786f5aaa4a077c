"""The chaos soak (bench/soak.py, ``make soak``) in short: about 45 s, seeded, in the normal test run.

The real ``python -m sidecar serve`` subprocess against both sandboxes with faults on every side (Google
20 %: 403 rate limits, 429, 500, 503, resets before and after the request was carried out; KiviCare
10 %: 503, 500, resets), access tokens expiring every 10 s, every sync token invalidated once, SIGKILLs
every few seconds, and churn both ways (staff in KiviCare, doctors in Google, a few bad inputs). Held
timeouts (31/61 s beyond the client timeouts) are left to the long soak: they would not fit here.
At the end KiviCare and Google must agree with no duplicate, lost change or unintended cancellation.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_soak():
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_soak", module)
    spec.loader.exec_module(module)
    return module


def test_short_soak_converges(tmp_path):
    soak = load_soak()
    opts = soak.SoakOptions(
        minutes=0.5, seed=11, doctors=2,
        google_kinds=dict(soak.QUICK_GOOGLE_KINDS), kivicare_kinds=dict(soak.QUICK_KIVICARE_KINDS),
        token_expiry_every=10, kill_every=(4.0, 9.0), restart_after=(0.2, 1.0), actions_per_minute=60,
        doctor_share=0.4, initial_per_doctor=6, keep_upcoming=8, settle_seconds=60, report=None,
        workdir=tmp_path / "soak", quiet=True)
    result = soak.run_soak(opts)
    f = result.figures
    assert result.ok, "\n".join(result.failures[:30]) + f"\n(work files: {result.workdir})"
    # The chaos really happened.
    assert sum(v for k, v in f["chaos"].items() if k.startswith("SIGKILL")) >= 1, f["chaos"]
    assert f["chaos"].get("sync tokens invalidated") == 1 and f["chaos"].get("access tokens expired", 0) >= 2
    assert sum(v for k, v in f["google_faults"].items() if k != "requests") >= 10, f["google_faults"]
    assert sum(v for k, v in f["kivicare_faults"].items() if k != "requests") >= 3, f["kivicare_faults"]
    assert sum(f["actions"].values()) >= 15 and f["bad_inputs"], (f["actions"], f["bad_inputs"])
    # Nothing lost, nothing doubled.
    assert f["duplicates"] == 0 and f["lost_changes"] == 0 and f["unintended_cancellations"] == 0
    assert f["appointments_agreeing"] == f["appointments_checked"] > 0


def test_fault_knobs_fail_like_the_real_thing():
    """What the soak's knobs do to a client: Google's error bodies, resets, and timeouts whose request is
    carried out after the client gave up (KiviCare writes show which ones land)."""
    import requests

    from sandbox.google import GoogleSandbox
    from sandbox.kivicare import KiviCareSandbox

    google, kivicare = GoogleSandbox(), KiviCareSandbox()
    google.start()
    kivicare.start()
    try:
        url = google.api_endpoint + "users/me/calendarList"
        for kind, status, reason in (("403_rate_limit", 403, "rateLimitExceeded"), ("429", 429, "rateLimitExceeded"),
                                     ("500", 500, "backendError"), ("503", 503, "backendError")):
            google.fault_rate(1.0, [kind], seed=1)
            answer = requests.get(url, timeout=5)
            assert answer.status_code == status and answer.json()["error"]["errors"][0]["reason"] == reason
        google.fault_rate(1.0, ["503"], seed=1)
        assert requests.post(google.token_uri, data={"grant_type": "refresh_token"}, timeout=5).status_code == 503
        google.fault_rate(1.0, ["reset"], seed=1)
        try:
            requests.get(url, timeout=5)
            raise AssertionError("no reset")
        except requests.ConnectionError:
            pass
        google.fault_rate(0)
        assert requests.get(url, timeout=5).status_code == 401  # back to normal: no token, Login Required
        counts = google.fault_counts()
        assert counts["503"] == 2 and counts["reset"] >= 1 and counts["requests"] >= 6

        appointment = kivicare.create_appointment(doctor_id=3, patient_id=5, start_utc="2030-01-07T09:00:00Z",
                                                  service_mapping_ids=[1])
        status_url = f"{kivicare.rest_url}/appointments/{appointment}/status"
        auth = (kivicare.username, kivicare.app_password)
        for kind, status, carried_out in (("reset", 0, False), ("reset_after", 2, True), ("hang", 4, False),
                                          ("timeout", 3, True)):
            before = kivicare.get_appointment(appointment)["status"]
            kivicare.fault_rate(1.0, [kind], seed=1, hold=0.6)
            try:
                requests.put(status_url, json={"status": status}, auth=auth, timeout=0.3)
                raise AssertionError(f"{kind}: answered")
            except (requests.ConnectionError, requests.Timeout):
                pass
            kivicare.fault_rate(0)
            deadline = time.monotonic() + 3
            while carried_out and kivicare.get_appointment(appointment)["status"] != status \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.7 if not carried_out else 0)
            assert kivicare.get_appointment(appointment)["status"] == (status if carried_out else before), kind
        kivicare.fault_rate(1.0, ["503"], seed=1)
        assert requests.get(status_url.rsplit("/", 1)[0], auth=auth, timeout=5).status_code == 503
        kivicare.fault_rate(0)
        assert requests.get(status_url.rsplit("/", 1)[0], auth=auth, timeout=5).status_code == 200
    finally:
        google.stop()
        kivicare.stop()
