"""Signed tokens for the links we email.

Two kinds, each with its own salt so one can never stand in for the other:

- confirmation tokens: expire after CONFIRM_TOKEN_MAX_AGE (48 h) and are bound to the
  subscriber's state the way Django's password-reset tokens are, so they stop
  working once used;
- subscriber-link tokens, for unsubscribe and preference links in every alert and
  digest: long-lived (SUBSCRIBER_LINK_MAX_AGE, over a year) and valid across a
  SECRET_KEY rotation through SECRET_KEY_FALLBACKS.

Link tokens are produced in bulk for every recipient of an alert, so `LinkTokens`
signs them with a precomputed HMAC key. The output is byte-for-byte what
`django.core.signing.TimestampSigner` produces, and verification is Django's own.
"""

from __future__ import annotations

import hashlib
import time
from binascii import b2a_base64
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

CONFIRM_SALT = "stoppress.confirm"
LINK_SALT = "stoppress.subscriber-link"


class TokenInvalid(Exception):
    """The token was forged, tampered with, or no longer matches the subscriber."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is too old; `subscriber_id` says whose it was."""

    def __init__(self, subscriber_id: int | None) -> None:
        super().__init__("expired")
        self.subscriber_id = subscriber_id


@dataclass(frozen=True)
class ConfirmClaim:
    subscriber_id: int
    state: str


class ConfirmTokens:
    """Single-use, expiring confirmation tokens."""

    def _now(self) -> float:
        return time.time()

    def _state_hash(self, subscriber) -> str:
        # Changes when the subscriber confirms, unsubscribes or signs up again, which
        # makes every earlier token for them stop working.
        value = f"{subscriber.pk}|{subscriber.status}|{subscriber.confirmed_at}|{subscriber.created_at}"
        return salted_hmac(CONFIRM_SALT, value).hexdigest()[:20]

    def make_token(self, subscriber) -> str:
        signer = signing.TimestampSigner(salt=CONFIRM_SALT)
        return _sign_at(signer, f"{subscriber.pk}.{self._state_hash(subscriber)}", self._now())

    def read(self, token: str) -> ConfirmClaim:
        """Return the claim, or raise TokenExpired / TokenInvalid."""
        signer = signing.TimestampSigner(salt=CONFIRM_SALT)
        if not isinstance(token, str) or len(token) > 200:
            raise TokenInvalid()
        try:
            value = _unsign_at(signer, token, settings.CONFIRM_TOKEN_MAX_AGE, self._now())
        except signing.SignatureExpired:
            raise TokenExpired(self._subscriber_id_ignoring_age(token)) from None
        except (signing.BadSignature, ValueError):
            raise TokenInvalid() from None
        return _claim_from(value)

    def matches(self, subscriber, claim: ConfirmClaim) -> bool:
        return constant_time_compare(self._state_hash(subscriber), claim.state)

    def _subscriber_id_ignoring_age(self, token: str) -> int | None:
        signer = signing.TimestampSigner(salt=CONFIRM_SALT)
        try:
            return _claim_from(signer.unsign(token)).subscriber_id
        except (signing.BadSignature, TokenInvalid, ValueError):
            return None


def _claim_from(value: str) -> ConfirmClaim:
    subscriber_id, _, state = value.partition(".")
    if not subscriber_id.isdigit() or not state:
        raise TokenInvalid()
    return ConfirmClaim(subscriber_id=int(subscriber_id), state=state)


def _sign_at(signer: signing.TimestampSigner, value: str, now: float) -> str:
    stamped = f"{value}{signer.sep}{signing.b62_encode(int(now))}"
    return signing.Signer.sign(signer, stamped)


def _unsign_at(signer: signing.TimestampSigner, token: str, max_age: int, now: float) -> str:
    result = signing.Signer.unsign(signer, token)
    value, timestamp = result.rsplit(signer.sep, 1)
    age = now - signing.b62_decode(timestamp)
    if age > max_age:
        raise signing.SignatureExpired(f"Signature age {age} > {max_age} seconds")
    return value


# HMAC's inner and outer key pads, and base64's URL-safe alphabet, as byte tables.
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class LinkTokens:
    """Long-lived tokens naming a subscriber, for unsubscribe and preference links."""

    def _now(self) -> float:
        return time.time()

    def make_token(self, subscriber_id: int) -> str:
        return self.bulk_maker()(subscriber_id)

    def bulk_maker(self):
        """Return a fast `subscriber_id -> token` function for one send.

        The tokens are exactly Django's TimestampSigner's (HMAC-SHA256 of the value
        under sha256(salt + "signer" + SECRET_KEY), URL-safe base64 without padding).
        Django derives the key and runs the HMAC key schedule on every call; here both
        are done once: the HMAC's inner and outer SHA-256 states, keyed, are copied per
        token (RFC 2104), a third of the cost of a one-shot hmac.digest.
        """
        signer = signing.TimestampSigner(salt=LINK_SALT)
        key = hashlib.sha256((LINK_SALT + "signer" + settings.SECRET_KEY).encode()).digest()
        block = key.ljust(hashlib.sha256().block_size, b"\0")  # a 32-byte key is padded, never hashed
        inner_keyed = hashlib.sha256(block.translate(_IPAD))
        outer_keyed = hashlib.sha256(block.translate(_OPAD))
        suffix = f"{signer.sep}{signing.b62_encode(int(self._now()))}"
        sep = signer.sep

        def make(subscriber_id: int) -> str:
            value = f"{subscriber_id}{suffix}"
            inner = inner_keyed.copy()
            inner.update(value.encode())
            outer = outer_keyed.copy()
            outer.update(inner.digest())
            mac = b2a_base64(outer.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")
            return f"{value}{sep}{mac.decode()}"

        return make

    def read(self, token: str) -> int:
        """Return the subscriber id, or raise TokenExpired / TokenInvalid."""
        signer = signing.TimestampSigner(salt=LINK_SALT)
        if not isinstance(token, str) or len(token) > 200:
            raise TokenInvalid()
        try:
            value = _unsign_at(signer, token, settings.SUBSCRIBER_LINK_MAX_AGE, self._now())
        except signing.SignatureExpired:
            raise TokenExpired(None) from None
        except (signing.BadSignature, ValueError):
            raise TokenInvalid() from None
        if not value.isdigit():
            raise TokenInvalid()
        return int(value)

    def read_ignoring_age(self, token: str) -> int:
        """Like read(), but a genuine token never expires. Only for unsubscribing:
        honouring an old link can only ever stop mail, so it must keep working."""
        signer = signing.TimestampSigner(salt=LINK_SALT)
        if not isinstance(token, str) or len(token) > 200:
            raise TokenInvalid()
        try:
            value = signer.unsign(token)
        except (signing.BadSignature, ValueError):
            raise TokenInvalid() from None
        if not value.isdigit():
            raise TokenInvalid()
        return int(value)


confirm_tokens = ConfirmTokens()
link_tokens = LinkTokens()


def link_owner(token: str) -> int | None:
    """The subscriber id a current link token names, or None if forged or expired."""
    try:
        return link_tokens.read(token)
    except TokenInvalid:  # TokenExpired included
        return None


def unsubscribe_owner(token: str) -> int | None:
    """The subscriber id a link token names, however old: an unsubscribe link never
    expires, because honouring an old one can only stop mail. None if forged."""
    try:
        return link_tokens.read_ignoring_age(token)
    except TokenInvalid:
        return None
