"""Mailbox providers, by the recipient's domain: where readers' mail is delivered
decides how fast (and whether) it arrives, so time to inbox is shown per provider."""

from __future__ import annotations

GMAIL, MICROSOFT, YAHOO, APPLE, OTHER = "gmail", "microsoft", "yahoo", "apple", "other"

LABELS = {GMAIL: "Gmail", MICROSOFT: "Microsoft", YAHOO: "Yahoo", APPLE: "Apple iCloud", OTHER: "Others"}

# The consumer domains of each. A newsroom's own or a company's domain hosted by one of
# them (Google Workspace, Microsoft 365) counts as "other": telling those apart would
# take an MX lookup per event.
DOMAINS = {
    GMAIL: {"gmail.com", "googlemail.com"},
    MICROSOFT: {"outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com"},
    YAHOO: {"yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com"},
    APPLE: {"icloud.com", "me.com", "mac.com"},
}
# Country variants: hotmail.co.uk, outlook.fr, yahoo.co.jp, live.de ...
PREFIXES = {MICROSOFT: ("hotmail.", "outlook.", "live.", "windowslive."), YAHOO: ("yahoo.", "ymail.")}
BY_DOMAIN = {domain: mailbox for mailbox, domains in DOMAINS.items() for domain in domains}


def mailbox_of(address: str) -> str:
    """The mailbox provider of an address (one of LABELS' keys)."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain in BY_DOMAIN:
        return BY_DOMAIN[domain]
    for mailbox, prefixes in PREFIXES.items():
        if domain.startswith(prefixes):
            return mailbox
    return OTHER
