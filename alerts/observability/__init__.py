"""Seeing it work: time to inbox, the metrics endpoint, the deliverability guard and
the admin's charts, all read from the ledger and the provider's events."""
