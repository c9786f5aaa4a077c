"""Performance benchmark (issue 7): ``python -m bench.perf`` (``make bench``) writes docs/PERFORMANCE.md.

What runs, all on loopback: the KiviCare and Google sandboxes, each in its own process with simulated
latency and Google's per-user limit (``sandboxes``); the sidecar as a real ``python -m sidecar serve``
subprocess (``environment``). Measured, in this order: each sandbox's own capacity (so no figure is
secretly the fake's limit), then the scenarios, one module each: ``initial_sync`` (a), ``idle`` (c).
``report`` writes the table. The engine is measured as it is; nothing here tunes it.
"""
