"""Outgoing webhooks, the delivering side: each outbox message POSTed to its endpoint,
signed per the Standard Webhooks spec (`delivery.py`); the admin of endpoints and of
messages, with redelivery (`admin.py`). Events are recorded by common/outbox.py."""
