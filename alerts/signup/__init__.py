"""Signing up: the form (page, embedded box, JSON endpoint), the double opt-in and its confirmation email."""
