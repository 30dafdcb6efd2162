"""`orch serve`: the scheduler, triggers, HTTP API and web UI over the runs of the state store.

Modules: ``catalog`` (the workflows folder: names, reloads), ``runs`` (runs the
service starts, at most ``max_runs`` at once, the rest queued), ``scheduler``
(cron and run_at entries against a clock, fire times recorded in the store),
``triggers`` (``after:``), ``security``, ``metrics``, ``ui`` (the only jinja2
import besides ``orchestrator.expr``: HTML pages), ``app`` (the only starlette
import) and ``server`` (the only hypercorn import). Nothing here is imported by
other commands: ``orch serve`` imports it inside itself.
"""
