"""Local fakes of external mail services (Mailgun HTTP API, SMTP)."""
