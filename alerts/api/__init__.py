"""The publishing API at /api/v1/: what a newsroom's CMS or a script uses to create,
publish, schedule, stop and follow alerts (views.py), authenticated by per-integration
tokens (tokens.py), each write safe to retry with an Idempotency-Key (idempotency.py),
every error an RFC 9457 problem (problems.py)."""
