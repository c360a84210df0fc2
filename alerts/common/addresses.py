"""Email address validation, normalisation and keyed hashing."""

from __future__ import annotations

import difflib
import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError, validate_email

INVALID_MESSAGE = "Please enter a valid email address"

# Domains readers mistype most; a near miss gets a "Did you mean" hint, never a block.
COMMON_DOMAINS = (
    "gmail.com", "googlemail.com", "hotmail.com", "hotmail.co.uk", "outlook.com",
    "live.com", "live.co.uk", "yahoo.com", "yahoo.co.uk", "icloud.com", "me.com",
    "aol.com", "btinternet.com", "sky.com", "virginmedia.com", "protonmail.com",
    "proton.me", "msn.com", "mail.com", "gmx.com", "gmx.de", "web.de",
)


def normalize_email(raw: str) -> str:
    """Return the canonical form of one deliverable address or raise ValidationError.

    email-validator refuses display names, several addresses, CR/LF, bad characters,
    a domain without a dot and over-long parts; it lower-cases the domain and
    converts an internationalised one to its IDNA form for sending.

    A non-ASCII mailbox name (SMTPUTF8) is refused: Django's mail code turns it into
    an RFC 2047 encoded word ("=?utf-8?b?...?=@example.com"), which is a different
    address, so the confirmation would go astray.
    """
    if not isinstance(raw, str) or len(raw) > 320 or "\x00" in raw:
        raise ValidationError(INVALID_MESSAGE, code="invalid")
    try:
        info = validate_email(
            raw.strip(),
            check_deliverability=settings.EMAIL_CHECK_DELIVERABILITY,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_smtputf8=False,
        )
    except EmailNotValidError:
        raise ValidationError(INVALID_MESSAGE, code="invalid") from None
    domain = (info.ascii_domain or info.domain).lower()
    # RFC 5321 limits, which mail servers enforce even where the parser is lenient.
    if len(info.local_part.encode()) > 64 or len(info.local_part) + 1 + len(domain) > 254:
        raise ValidationError(INVALID_MESSAGE, code="invalid")
    return f"{info.local_part}@{domain}"


def suggest_domain(email: str) -> str | None:
    """A likely intended address for a mistyped common domain, else None."""
    local, _, domain = email.rpartition("@")
    if not local or domain in COMMON_DOMAINS:
        return None
    match = _near_miss(domain)
    return f"{local}@{match}" if match else None


@lru_cache(maxsize=4096)
def _near_miss(domain: str) -> str | None:
    # Readers' domains repeat (a spike is mostly a few dozen of them): difflib's 22
    # comparisons are worth doing once per domain, not once per signup.
    matches = difflib.get_close_matches(domain, COMMON_DOMAINS, n=1, cutoff=0.8)
    return matches[0] if matches else None


def email_hmac(email: str) -> str:
    """HMAC-SHA256 of the normalised address under a secret pepper.

    A bare hash of an address can be reversed by dictionary; a keyed one cannot
    without the key. The key is separate from SECRET_KEY so it survives key rotation.
    """
    key = settings.EMAIL_HASH_KEY.encode()
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()
