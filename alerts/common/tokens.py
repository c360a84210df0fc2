"""The tokens in the links we email, one kind per purpose, each with its own key and
lifetime so that one can never stand in for another:

| kind | names | lifetime | where it travels |
|---|---|---|---|
| `link_tokens` | a subscriber | SUBSCRIBER_LINK_MAX_AGE (400 days); unsubscribing: forever | every alert and digest (List-Unsubscribe, preference link) |
| `confirm_tokens` | a consent request | CONFIRM_TOKEN_MAX_AGE (48 h), once | the confirmation email |
| `data_tokens["export"]`, `["erase"]` | a subscriber | DATA_LINK_MAX_AGE (1 h), once | an email sent on request |
| `reengage_tokens` | a subscriber | REENGAGE_LINK_MAX_AGE (grace period + 7 days) | the "still want these?" email |

Every token is sealed: the ids and the issue time inside are encrypted and
authenticated (see `Sealer`), so a token shows nobody whose it is and none can be
forged or edited. A token carries the time it was issued, which is the per-subscriber
nonce: `Subscriber.links_not_before` revokes every link issued before it, without
rotating SECRET_KEY and without the fan-out having to read anything per recipient to
make one. Tokens are made with SECRET_KEY and read with it or any of
SECRET_KEY_FALLBACKS, so rotating the key keeps mailed links working.

Unsubscribe links mailed before tokens were sealed (Django TimestampSigner values,
`id:timestamp:signature`) still unsubscribe, and do nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from binascii import Error as Base64Error
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.utils.crypto import salted_hmac

from ..models import Subscriber

LINK_SALT = "stoppress.subscriber-link"
CONFIRM_SALT = "stoppress.confirm"
# The salt of the unsealed link tokens mailed before; only unsubscribing reads them.
LEGACY_LINK_SALT = LINK_SALT

TAG_BYTES = 16  # a 128-bit authenticator
ID_BYTES = 8  # bigint ids
TIME_BYTES = 6  # milliseconds since 1970, good until the year 10889

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = bytes.maketrans(b"-_", b"+/")


class TokenInvalid(Exception):
    """The token was forged, tampered with, revoked, or no longer matches what it names."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is too old; `subject_id` says whom or what it named."""

    def __init__(self, subject_id: int | None) -> None:
        super().__init__("expired")
        self.subject_id = subject_id


@dataclass(frozen=True)
class Claim:
    """What a genuine token says: the id it names and when it was issued."""

    subject_id: int
    issued_at: datetime


@lru_cache(maxsize=32)
def _keys(salt: str, secret: str) -> tuple[bytes, bytes]:
    """The authentication and encryption keys of one purpose under one secret."""
    mac = salted_hmac(f"{salt}.mac", "stoppress sealed token", secret=secret, algorithm="sha256")
    enc = salted_hmac(f"{salt}.enc", "stoppress sealed token", secret=secret, algorithm="sha256")
    return mac.digest(), enc.digest()


class Sealer:
    """Deterministic authenticated encryption of a short payload (SIV construction):
    tag = BLAKE2b-MAC(k1, payload), ciphertext = payload XOR BLAKE2b-PRF(k2, tag),
    token = base64url(tag + ciphertext). Opening recomputes the tag from the decrypted
    payload and compares in constant time. BLAKE2b's keyed mode is a MAC and a PRF by
    design (RFC 7693); the keys are precomputed per send, so sealing one token is two
    short hashes (about 1.2 µs)."""

    def __init__(self, salt: str, size: int) -> None:
        self.salt, self.size = salt, size

    def maker(self) -> Callable[[bytes], str]:
        mac_key, enc_key = _keys(self.salt, settings.SECRET_KEY)
        mac_base = hashlib.blake2b(key=mac_key, digest_size=TAG_BYTES)
        pad_base = hashlib.blake2b(key=enc_key, digest_size=self.size)

        def seal(payload: bytes) -> str:
            mac = mac_base.copy()
            mac.update(payload)
            tag = mac.digest()
            pad = pad_base.copy()
            pad.update(tag)
            sealed = int.from_bytes(payload, "big") ^ int.from_bytes(pad.digest(), "big")
            raw = tag + sealed.to_bytes(self.size, "big")
            return b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()

        return seal

    def open(self, token: str) -> bytes:
        """The payload, or raise TokenInvalid."""
        raw = _decode(token, TAG_BYTES + self.size)
        tag, sealed = raw[:TAG_BYTES], raw[TAG_BYTES:]
        for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]:
            mac_key, enc_key = _keys(self.salt, secret)
            pad = hashlib.blake2b(tag, key=enc_key, digest_size=self.size).digest()
            payload = (int.from_bytes(sealed, "big") ^ int.from_bytes(pad, "big")).to_bytes(self.size, "big")
            expected = hashlib.blake2b(payload, key=mac_key, digest_size=TAG_BYTES).digest()
            if hmac.compare_digest(tag, expected):
                return payload
        raise TokenInvalid()


def _decode(token: object, length: int) -> bytes:
    if not isinstance(token, str) or len(token) > 100 or not token.isascii():
        raise TokenInvalid()
    text = token.encode().translate(_STANDARD)
    try:
        raw = a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    except (Base64Error, ValueError):
        raise TokenInvalid() from None
    if len(raw) != length:
        raise TokenInvalid()
    return raw


class IdTokens:
    """Sealed tokens naming one id, with their issue time and a maximum age."""

    def __init__(self, salt: str, max_age_setting: str) -> None:
        self.salt, self.max_age_setting = salt, max_age_setting
        self.sealer = Sealer(salt, ID_BYTES + TIME_BYTES)

    def _now(self) -> float:
        return time.time()

    def bulk_maker(self) -> Callable[[int], str]:
        """A fast `id -> token` function for one send, every token issued now: the keys
        and the issue time are worked out once, so each token costs two short hashes."""
        seal = self.sealer.maker()
        issued = int(self._now() * 1000).to_bytes(TIME_BYTES, "big")

        def make(subject_id: int) -> str:
            return seal(subject_id.to_bytes(ID_BYTES, "big") + issued)

        return make

    def make_token(self, subject_id: int) -> str:
        return self.bulk_maker()(subject_id)

    def read(self, token: str) -> Claim:
        """The claim of a current token, or raise TokenExpired / TokenInvalid."""
        claim = self.read_ignoring_age(token)
        age = self._now() - claim.issued_at.timestamp()
        if age > getattr(settings, self.max_age_setting) or age < -300:
            raise TokenExpired(claim.subject_id)
        return claim

    def read_ignoring_age(self, token: str) -> Claim:
        payload = self.sealer.open(token)
        subject_id = int.from_bytes(payload[:ID_BYTES], "big")
        issued_ms = int.from_bytes(payload[ID_BYTES:], "big")
        return Claim(subject_id=subject_id, issued_at=datetime.fromtimestamp(issued_ms / 1000, tz=UTC))


class LinkTokens(IdTokens):
    """Long-lived tokens naming a subscriber, for the unsubscribe and preference links
    in every alert and digest. `bulk_maker()` is what the fan-out signs each batch's
    links with (alerts.sending.provider)."""

    def __init__(self) -> None:
        super().__init__(LINK_SALT, "SUBSCRIBER_LINK_MAX_AGE")

    def read_for_unsubscribe(self, token: str) -> int:
        """The subscriber a genuine link names, however old, revoked or not, sealed or
        from before sealing: honouring an unsubscribe link can only ever stop mail,
        so every link ever mailed keeps doing that. Raises TokenInvalid if forged."""
        try:
            return self.read_ignoring_age(token).subject_id
        except TokenInvalid:
            return _legacy_subscriber_id(token)


def _legacy_subscriber_id(token: str) -> int:
    # Django's TimestampSigner value; signer.unsign tries SECRET_KEY_FALLBACKS too.
    if not isinstance(token, str) or len(token) > 200:
        raise TokenInvalid()
    try:
        value = signing.TimestampSigner(salt=LEGACY_LINK_SALT).unsign(token)
    except (signing.BadSignature, ValueError):
        raise TokenInvalid() from None
    if not value.isdigit():
        raise TokenInvalid()
    return int(value)


link_tokens = LinkTokens()
# A confirmation link names the consent request it was sent for, not the subscriber:
# confirming grants exactly what that request asked for.
confirm_tokens = IdTokens(CONFIRM_SALT, "CONFIRM_TOKEN_MAX_AGE")
# Downloading and erasing a reader's data: short-lived, single-use, emailed on request.
data_tokens = {
    "export": IdTokens("stoppress.data-export", "DATA_LINK_MAX_AGE"),
    "erase": IdTokens("stoppress.data-erase", "DATA_LINK_MAX_AGE"),
}

# "Yes, keep sending" in the re-engagement email: it can only keep a reader subscribed,
# so it lives no longer than the question it answers.
reengage_tokens = IdTokens("stoppress.reengage", "REENGAGE_LINK_MAX_AGE")


def current_claim(tokens: IdTokens, token: str) -> Claim | None:
    """The claim of a current token of this kind, or None if forged or expired. The
    caller still checks the subscriber's revocation (Subscriber.accepts_link)."""
    try:
        return tokens.read(token)
    except TokenInvalid:  # TokenExpired included
        return None


def subscriber_for(tokens: IdTokens, token: str) -> Subscriber | None:
    """The subscriber a current token of this kind names, unless their links were
    revoked after it was issued. None for anything else, whatever the reason, so a
    bad link reveals nothing."""
    claim = current_claim(tokens, token)
    subscriber = Subscriber.objects.filter(pk=claim.subject_id).first() if claim else None
    if subscriber is None or not subscriber.accepts_link(claim.issued_at):
        return None
    return subscriber


def unsubscribe_owner(token: str) -> int | None:
    """The subscriber id an unsubscribe link names, however old. None if forged."""
    try:
        return link_tokens.read_for_unsubscribe(token)
    except TokenInvalid:
        return None
