"""Scheduled digests: who is due when (schedule) and sending one batch of them (send)."""
