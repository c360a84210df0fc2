"""Stop Press data model.

Subscribers and their consent evidence; alerts and the per-batch, per-recipient
ledger of their sending; the suppression list every send respects.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone


class Topic(models.Model):
    name = models.CharField(max_length=60, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class Wording(models.Model):
    """Immutable text shown to a reader when consent was asked: a form heading, a
    checkbox label or a privacy notice. Consent events point at the exact version."""

    class Kind(models.TextChoices):
        ALERTS = "alerts", "Breaking-news alerts wording"
        MARKETING = "marketing", "Marketing checkbox label"
        PRIVACY = "privacy", "Privacy notice"
        PREFERENCES = "preferences", "Preference centre wording"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    version = models.CharField(max_length=40, blank=True)
    text = models.TextField()
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.version or self.digest[:8]}"

    @staticmethod
    def digest_for(kind: str, version: str, text: str) -> str:
        return hashlib.sha256(f"{kind}\0{version}\0{text}".encode()).hexdigest()


class SubscriberQuerySet(models.QuerySet):
    def unsuppressed(self) -> SubscriberQuerySet:
        """Those whose address has no active suppression: every send goes through this."""
        return self.filter(~Exists(Suppression.objects.active().filter(email_hmac=OuterRef("email_hmac"))))


class Subscriber(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending confirmation"
        CONFIRMED = "confirmed", "Confirmed"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"

    class Frequency(models.TextChoices):
        IMMEDIATE = "immediate", "As it happens"
        DAILY = "daily", "Daily digest"
        WEEKLY = "weekly", "Weekly digest"

    # Normalised at signup (lower-cased domain, IDNA). Unique regardless of case, so
    # concurrent signups of one address can only ever create one row.
    email = models.EmailField(max_length=254)
    # Keyed hash of the address: joins against the suppression list without it ever
    # needing the plaintext, and survives erasure there.
    email_hmac = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    marketing_consent = models.BooleanField(default=False)
    frequency = models.CharField(
        max_length=10, choices=Frequency.choices, default=Frequency.IMMEDIATE
    )
    # Empty means every topic.
    topics = models.ManyToManyField(Topic, blank=True, related_name="subscribers")
    time_zone = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    last_digest_at = models.DateTimeField(null=True, blank=True)
    # The per-subscriber nonce of every emailed link: links issued before this moment
    # no longer open anything (unsubscribing excepted). Every token carries its issue
    # time, so this is checked when a link is used and costs nothing when alerts are
    # signed in bulk. Null: no link was ever revoked.
    links_not_before = models.DateTimeField(null=True, blank=True)
    # --- Where the reader signed up (copied from their first ConsentRequest) ---
    # The article page that embedded the box (or, failing that, the Referer), and the
    # campaign tags of its URL: "top articles by signups" and the per-source charts.
    signup_page = models.URLField(max_length=500, blank=True, db_default="")
    signup_referrer = models.URLField(max_length=500, blank=True, db_default="")
    utm_source = models.CharField(max_length=100, blank=True, db_default="")
    utm_medium = models.CharField(max_length=100, blank=True, db_default="")
    utm_campaign = models.CharField(max_length=100, blank=True, db_default="")
    # --- Re-engagement (alerts/subscribers/reengagement.py): "still want these?" ---
    # When the reader was last asked, while the question is open (null once answered;
    # an asking from before the reader's latest confirmation is void), and when they
    # last answered (the "keep sending" button, or an open or click since the asking).
    reengage_asked_at = models.DateTimeField("“still want these?” asked at", null=True, blank=True)
    reengage_kept_at = models.DateTimeField("“still want these?” answered at", null=True, blank=True)

    objects = SubscriberQuerySet.as_manager()

    class Meta:
        permissions = [
            ("export_subscriber_data", "Can download subscribers' personal data"),
            ("erase_subscriber", "Can erase subscribers"),
        ]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="subscriber_unique_email"),
        ]
        # Plain b-trees, declared here rather than with db_index: on PostgreSQL that
        # would add a second, LIKE-pattern index to each, which nothing queries and
        # every non-HOT update of a reader's row would pay for.
        indexes = [
            # The fan-out walks confirmed subscribers in id order.
            models.Index(
                fields=["id"],
                name="subscriber_confirmed_id",
                condition=Q(status="confirmed"),
            ),
            models.Index(fields=["email_hmac"], name="subscriber_email_hmac"),
            models.Index(fields=["status"], name="subscriber_status"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def is_deliverable(self) -> bool:
        return self.status == self.Status.CONFIRMED

    def mark_confirmed(self) -> None:
        self.status = self.Status.CONFIRMED
        self.confirmed_at = timezone.now()
        self.unsubscribed_at = None

    def mark_unsubscribed(self) -> None:
        self.status = self.Status.UNSUBSCRIBED
        self.unsubscribed_at = timezone.now()

    def accepts_link(self, issued_at) -> bool:
        """Whether a link issued at `issued_at` is still good: not revoked since."""
        return self.links_not_before is None or issued_at >= self.links_not_before


class ConsentEvent(models.Model):
    """Append-only evidence: who consented to (or withdrew) what, when, how, and
    exactly what they were shown."""

    class Purpose(models.TextChoices):
        ALERTS = "alerts", "Breaking-news emails"
        MARKETING = "marketing", "Offers, events and updates"

    class Action(models.TextChoices):
        REQUESTED = "requested", "Requested (awaiting confirmation)"
        GIVEN = "given", "Given"
        CONFIRMED = "confirmed", "Confirmed"
        WITHDRAWN = "withdrawn", "Withdrawn"

    class Source(models.TextChoices):
        WEB = "web", "Web form"
        EMBED = "embed", "Embedded form"
        API = "api", "API"
        IMPORT = "import", "Import"
        ADMIN = "admin", "Admin"
        EMAIL_LINK = "email_link", "Link in an email"
        ONE_CLICK = "one_click", "One-click unsubscribe"
        PREFERENCES = "preferences", "Preference centre"
        PROVIDER = "provider", "Email provider event"
        REENGAGEMENT = "reengagement", "No answer to a re-engagement email"

    subscriber = models.ForeignKey(
        Subscriber, on_delete=models.CASCADE, related_name="consent_events"
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    action = models.CharField(max_length=20, choices=Action.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    wording = models.ForeignKey(
        Wording, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    privacy_notice = models.ForeignKey(
        Wording, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    note = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()}: {self.get_action_display()}"


class ConsentRequest(models.Model):
    """A reader's request for consent, waiting for them to confirm it by email: a
    signup from a form (alerts, and marketing if the box was ticked), a return after
    unsubscribing, or marketing ticked in the preference centre.

    The confirmation link names the request, not the subscriber, so confirming grants
    exactly what this request asked for, never what somebody else's later request for
    the same address added. A signup is recorded here by the web request in one insert,
    whatever the address's state, and a worker does the rest
    (signup.services.consent_request_process); so the request's work reveals nothing."""

    email = models.EmailField(max_length=254)
    email_hmac = models.CharField(max_length=64, editable=False)
    # Set when the request is for a known reader (or once the worker has found or
    # created them for a signup).
    subscriber = models.ForeignKey(Subscriber, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="consent_requests")
    alerts = models.BooleanField(default=True)
    marketing = models.BooleanField(default=False)
    source = models.CharField(max_length=20, choices=ConsentEvent.Source.choices)
    time_zone = models.CharField(max_length=64, blank=True)
    # Stored as CONSENT_NETWORK_DATA says, as on consent events.
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    # The exact texts the reader was shown when they asked. No index on these three:
    # nothing looks requests up by wording (a wording is never deleted, only followed
    # by a new one), and every signup's INSERT, and the drain's UPDATE after it, would
    # otherwise write three more index entries.
    wording = models.ForeignKey(Wording, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                                db_index=False)
    marketing_wording = models.ForeignKey(Wording, on_delete=models.PROTECT, null=True, blank=True,
                                          related_name="+", db_index=False)
    privacy_notice = models.ForeignKey(Wording, on_delete=models.PROTECT, null=True, blank=True,
                                       related_name="+", db_index=False)
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # --- Where the signup came from, as the request saw it (kept on the Subscriber) ---
    signup_page = models.URLField(max_length=500, blank=True, db_default="")
    signup_referrer = models.URLField(max_length=500, blank=True, db_default="")
    utm_source = models.CharField(max_length=100, blank=True, db_default="")
    utm_medium = models.CharField(max_length=100, blank=True, db_default="")
    utm_campaign = models.CharField(max_length=100, blank=True, db_default="")

    class Meta:
        indexes = [
            models.Index(fields=["email_hmac"], name="consent_request_email_hmac"),
            models.Index(fields=["created_at"], name="consent_request_created_at"),
            # What the sweeper re-queues: committed, never processed (broker down).
            models.Index(fields=["created_at"], name="consent_request_unprocessed",
                         condition=Q(processed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"Consent request {self.pk}"

    @property
    def purposes(self) -> list[str]:
        return [purpose for purpose, asked in
                ((ConsentEvent.Purpose.ALERTS, self.alerts), (ConsentEvent.Purpose.MARKETING, self.marketing))
                if asked]


class RightsEvent(models.Model):
    """Who downloaded or erased a reader's data, when, and how: every export and
    erasure, by staff or by the reader. Kept after an erasure, naming the subscriber by
    their old id only."""

    class Kind(models.TextChoices):
        EXPORT = "export", "Data downloaded"
        ERASURE = "erasure", "Erased"

    class Via(models.TextChoices):
        EMAIL_LINK = "email_link", "Reader, through a link we emailed"
        ADMIN = "admin", "Staff, in the admin"
        COMMAND = "command", "Management command"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    via = models.CharField(max_length=20, choices=Via.choices)
    # Null for a bulk export of the whole list (export_subscribers).
    subscriber_ref = models.BigIntegerField(null=True, blank=True, db_index=True)
    count = models.PositiveIntegerField(default=1)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    # Kept as text too: the record must outlive the staff account.
    actor_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.get_via_display()})"


class Alert(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    headline = models.CharField(max_length=200)
    standfirst = models.CharField(max_length=400, blank=True)
    body = models.TextField(blank=True)
    url = models.URLField("article URL", max_length=500, blank=True)
    image_url = models.URLField("image URL", max_length=500, blank=True)
    image_alt = models.CharField(max_length=200, blank=True)
    topics = models.ManyToManyField(Topic, blank=True, related_name="alerts")
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Set when the fan-out has cut every batch; until then the sweeper re-enqueues it.
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    first_handoff_at = models.DateTimeField(null=True, blank=True)
    last_handoff_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    audience_size = models.PositiveIntegerField(default=0)
    # The one walker cutting the audience: its task id, a lease it renews at every step,
    # and a fence raised by every claim, so that a walker whose lease was taken over
    # can no longer write (sending/batches.py, CutLease).
    cut_by = models.CharField(max_length=64, blank=True)
    cut_fence = models.PositiveIntegerField(default=0)
    cut_lease_expires_at = models.DateTimeField(null=True, blank=True)
    # --- Failover ---
    # When this alert's remaining batches went to EMAIL_BACKEND_FALLBACK because the
    # primary provider had been failing for FAILOVER_AFTER_SECONDS. Per alert: the
    # next alert starts on the primary again (alerts/sending/failover.py).
    failover_at = models.DateTimeField(null=True, blank=True)

    # --- Corrections and updates (publishing/corrections.py) -------------------------
    class Kind(models.TextChoices):
        NORMAL = "normal", "Alert"
        CORRECTION = "correction", "Correction"
        UPDATE = "update", "Update"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.NORMAL)
    # A correction or update goes to the readers the ledger says received this one.
    follow_up_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="follow_ups")
    # --- A second pair of eyes (APPROVAL_REQUIRED_ABOVE; publishing/services.py) ------
    # Who approved the alert as it now reads (never its author); an edit clears it.
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("publish_alert", "Can publish, schedule and stop alerts")]

    def __str__(self) -> str:
        return self.headline

    @property
    def is_follow_up(self) -> bool:
        return self.follow_up_of_id is not None


class DigestRun(models.Model):
    """One period's digest for the subscribers of one time zone, e.g. the daily digest
    of 27 November for readers in Asia/Tokyo."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Finished with failures"

    frequency = models.CharField(max_length=10)
    period_key = models.CharField(max_length=40)
    time_zone = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    planned = models.PositiveIntegerField(default=0)
    # --- Failover ---
    # When this run's remaining batches went to EMAIL_BACKEND_FALLBACK, as an alert's
    # do (Alert.failover_at): the next run starts on the primary again.
    failover_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.period_key} ({self.time_zone})"


class Batch(models.Model):
    """One provider API call's worth of recipients: for an alert, the eligible
    subscribers with ids in [first_subscriber_id, last_subscriber_id] at publish time;
    for a digest run, the ledger rows reserved for that range."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # No index of their own: the unique ranges below lead with them.
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="batches",
                              null=True, blank=True, db_index=False)
    digest_run = models.ForeignKey(DigestRun, on_delete=models.CASCADE, related_name="batches",
                                   null=True, blank=True, db_index=False)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING
    )
    first_subscriber_id = models.BigIntegerField()
    last_subscriber_id = models.BigIntegerField()
    planned_count = models.PositiveIntegerField(default=0)
    sent_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    # Every claim adds one; it is also the claim's fence: closing writes only while the
    # batch still carries the attempt number its claim returned.
    attempts = models.PositiveSmallIntegerField(default=0)
    # The task holding the claim: its redelivered copy (Celery redelivers a task only
    # when its worker died) takes the batch back at once instead of waiting out the lease.
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Claims that took the batch from a holder that died or hung; past a few, the
    # batch is set aside (a dead letter) so that it cannot keep killing workers.
    takeovers = models.PositiveSmallIntegerField(default=0)
    # While the provider fails transiently: since when, and the earliest next try.
    waiting_since = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Transient failures are retried until then (SEND_GIVE_UP_AFTER_SECONDS after
    # the batch was cut, or after the editor's "Retry failed now").
    give_up_at = models.DateTimeField(null=True, blank=True)
    # Calls that timed out after the request was sent: the provider may have accepted
    # them, so such a batch is sent again at most once.
    timeouts_after_send = models.PositiveSmallIntegerField(default=0)
    # When the retention purge deleted this batch's ledger rows. The purge finds old
    # rows through their batches (by the indexes that already serve a batch's rows), so
    # the ledger needs no index by time: one measured 10% of PostgreSQL's time per send.
    purged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The provider's id for the batch's one API call (Mailgun gives every recipient of a
    # call the same id), kept here once rather than on each of its ledger rows.
    message_id = models.CharField(max_length=200, blank=True)
    last_error = models.TextField(blank=True)
    # --- Failover ---
    # The provider that sent the batch (its anymail name, "SMTP", or with " (fallback)"
    # when the fallback is the same kind of backend): one call's worth of readers goes
    # through one provider, so the ledger's rows say who sent them through their batch.
    provider = models.CharField(max_length=60, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "first_subscriber_id"], name="batch_unique_range"
            ),
            models.UniqueConstraint(
                fields=["digest_run", "first_subscriber_id"], name="batch_unique_digest_range"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["message_id"], name="batch_message_id", condition=~Q(message_id="")),
            # "Is any batch still open?" is asked as every batch closes; these keep the
            # answer one index probe however many batches are already done.
            models.Index(fields=["alert"], name="batch_open_by_alert",
                         condition=Q(status__in=["pending", "sending"])),
            models.Index(fields=["digest_run"], name="batch_open_by_digest_run",
                         condition=Q(status__in=["pending", "sending"])),
        ]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        owner = f"alert {self.alert_id}" if self.alert_id else f"digest run {self.digest_run_id}"
        return f"Batch {self.pk} of {owner}"


class DeliveryQuerySet(models.QuerySet):
    def of_subscriber(self, subscriber_id: int) -> DeliveryQuerySet:
        """One subscriber's rows, by index: for alerts, one probe of the unique
        (alert, subscriber) per alert; digest rows through their (subscriber, digest_key)."""
        # A literal list (alerts number thousands, not millions): as a subquery inside
        # the OR, PostgreSQL would check it per row of a scan of the whole ledger.
        alert_ids = list(Alert.objects.values_list("pk", flat=True))
        return self.filter(Q(alert_id__in=alert_ids) | ~Q(digest_key=""), subscriber_id=subscriber_id)

    def of_batch(self, batch: Batch) -> DeliveryQuerySet:
        """One batch's rows, by index: an alert batch's are in its alert's part of the
        unique (alert, subscriber), within the batch's range; a digest batch's are in
        the (digest_run, batch) partial index."""
        if batch.alert_id is None:
            return self.filter(digest_run_id=batch.digest_run_id, batch_id=batch.pk)
        return self.filter(alert_id=batch.alert_id, subscriber_id__gte=batch.first_subscriber_id,
                           subscriber_id__lte=batch.last_subscriber_id, batch_id=batch.pk)


class Delivery(models.Model):
    """The ledger: one row per recipient an alert (or a digest) was handed to the
    provider for. Digest rows are reserved as PENDING before sending: the unique
    (subscriber, digest_key) makes each period's digest go to each subscriber once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Reserved, not yet sent"
        SKIPPED = "skipped", "Nothing new to send"
        SENT = "sent", "Handed to provider"
        FAILED = "failed", "Refused"
        DELIVERED = "delivered", "Delivered"
        DEFERRED = "deferred", "Deferred"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"
        OPENED = "opened", "Opened"
        CLICKED = "clicked", "Clicked"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"

    # The ledger gets a row per recipient of every alert, a million at a time, written
    # in one statement per batch, and each index costs an insertion per row. So there
    # are no foreign-key constraints (a trigger per row; the application keeps the
    # references and Django still cascades deletes) and an alert's rows go into two
    # indexes only: the primary key and the unique (alert, subscriber). Both grow at
    # their right-hand end as an alert is sent; an index led by the subscriber would
    # take each batch's thousand rows at a thousand places spread over the whole
    # ledger. A batch's rows are its alert's within its subscriber range
    # (DeliveryQuerySet.of_batch); a subscriber's are found through the alerts
    # (of_subscriber). Digest rows have partial indexes of their own.
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries",
                              null=True, blank=True, db_constraint=False, db_index=False)
    digest_run = models.ForeignKey(DigestRun, on_delete=models.CASCADE, related_name="deliveries",
                                   null=True, blank=True, db_constraint=False, db_index=False)
    # "daily:2026-11-27" or "weekly:2026-W48"; empty for alert deliveries.
    digest_key = models.CharField(max_length=40, blank=True)
    # Not cascaded: Django would delete by subscriber_id, which no index leads with.
    # subscriber_erase deletes a subscriber's rows through of_subscriber first.
    subscriber = models.ForeignKey(Subscriber, on_delete=models.DO_NOTHING, related_name="deliveries",
                                   db_constraint=False, db_index=False)
    # Deleted with their alert or digest run (cascading here would delete by batch_id,
    # which only digest rows are indexed by).
    batch = models.ForeignKey(Batch, on_delete=models.DO_NOTHING, related_name="deliveries",
                              db_constraint=False, db_index=False)
    status = models.CharField(max_length=20, choices=Status.choices)
    # Set where each recipient got their own provider message (SMTP, digests); empty
    # where the whole batch went as one call, whose id is on the batch.
    message_id = models.CharField(max_length=200, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=400, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        # Webhook events find their row by provider message id (exact match only).
        indexes = [
            models.Index(fields=["message_id"], name="delivery_message_id", condition=~Q(message_id="")),
            models.Index(fields=["digest_run", "batch"], name="delivery_digest_run_batch",
                         condition=Q(digest_run__isnull=False)),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "subscriber"], name="delivery_once_per_alert"
            ),
            models.UniqueConstraint(
                fields=["subscriber", "digest_key"], condition=~Q(digest_key=""),
                name="delivery_once_per_digest_period",
            ),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        what = self.alert_id or self.digest_key
        return f"{what} -> {self.subscriber_id}: {self.status}"

    @property
    def provider_message_id(self) -> str:
        return self.message_id or (self.batch.message_id if self.batch_id else "")


class SuppressionQuerySet(models.QuerySet):
    def active(self) -> SuppressionQuerySet:
        """Suppressions in force: not lifted. An address has at most one."""
        return self.filter(lifted_at__isnull=True)

    def of_address(self, email_hmac: str) -> SuppressionQuerySet:
        """The address's suppression in force, if any (by its keyed hash)."""
        return self.active().filter(email_hmac=email_hmac)


class Suppression(models.Model):
    """Addresses we must not mail, kept as a keyed hash so the entry can outlive the
    subscriber's erasure."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "bounced", "Hard bounce"
        SOFT_BOUNCES = "soft_bounces", "Repeated soft bounces"
        COMPLAINT = "complained", "Spam complaint"
        REFUSED = "refused", "Refused by provider"
        ERASED = "erased", "Erased at the subscriber's request"
        MANUAL = "manual", "Added by staff"

    email_hmac = models.CharField(max_length=64, editable=False)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    detail = models.CharField(max_length=400, blank=True)
    event_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    lift_reason = models.CharField(max_length=400, blank=True)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        constraints = [
            # At most one active suppression per address.
            models.UniqueConstraint(
                fields=["email_hmac"],
                condition=Q(lifted_at__isnull=True),
                name="suppression_one_active",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} ({self.email_hmac[:10]}…)"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class TrackingEvent(models.Model):
    """An email-provider event we have applied, kept so a replayed webhook applies once."""

    event_id = models.CharField(max_length=200, unique=True)
    event_type = models.CharField(max_length=20, db_index=True)
    message_id = models.CharField(max_length=200, blank=True, db_index=True)
    recipient_hmac = models.CharField(max_length=64, blank=True, db_index=True)
    reject_reason = models.CharField(max_length=40, blank=True)
    description = models.CharField(max_length=400, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    received_at = models.DateTimeField(default=timezone.now)

    # --- Observability: which alert an event was about, and the reader's mailbox
    # provider (alerts/observability/), set as the event is received, so that an
    # alert's time to inbox and engagement are one indexed query. No foreign-key
    # constraint: an event row is written for every recipient of every alert, and the
    # retention purge removes events by age, not with their alert.
    alert = models.ForeignKey(Alert, on_delete=models.DO_NOTHING, null=True, blank=True,
                              db_constraint=False, db_index=False, related_name="+")
    # "gmail", "microsoft", "yahoo", "apple" or "other": the recipient's domain, grouped.
    mailbox = models.CharField(max_length=12, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["recipient_hmac", "event_type", "occurred_at"]),
            # Observability: one alert's events of one kind (time to inbox, engagement).
            models.Index(fields=["alert", "event_type", "occurred_at"], name="tracking_event_by_alert",
                         condition=Q(alert__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


# --- The newsroom's audit trail ---------------------------------------------------------


class AuditEvent(models.Model):
    """Append-only record of every editorial action and every change to what the
    newsroom sends or to whom: who, when, from where, and what changed. Written only
    through common.audit.record_audit; the admin shows it and can change nothing."""

    class Action(models.TextChoices):
        ALERT_CREATED = "alert.created", "Alert created"
        ALERT_EDITED = "alert.edited", "Alert edited"
        ALERT_SCHEDULED = "alert.scheduled", "Alert scheduled"
        ALERT_UNSCHEDULED = "alert.unscheduled", "Alert unscheduled"
        ALERT_PUBLISHED = "alert.published", "Alert published"
        ALERT_CANCELLED = "alert.cancelled", "Alert stopped"
        ALERT_RETRIED = "alert.retried", "Failed batches sent again"
        ALERT_TEST_SENT = "alert.test_sent", "Test sent"
        ALERT_DELETED = "alert.deleted", "Draft deleted"
        FOLLOW_UP_SENT = "alert.follow_up_sent", "Correction or update sent"
        APPROVAL_REQUESTED = "alert.approval_requested", "Approval requested"
        APPROVED = "alert.approved", "Approved"
        TOPIC_CHANGED = "topic.changed", "Topic added or changed"
        TOPIC_DELETED = "topic.deleted", "Topic deleted"
        SUPPRESSION_LIFTED = "suppression.lifted", "Suppression lifted"
        OTHER = "other", "Other"

    class Via(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "API"
        COMMAND = "command", "Management command"
        SYSTEM = "system", "Stop Press itself"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    via = models.CharField(max_length=10, choices=Via.choices, default=Via.ADMIN)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    # Kept as text too: the record must outlive the staff account (or name an API token).
    actor_name = models.CharField(max_length=150, blank=True)
    # The client address behind TRUSTED_PROXIES (common/network.py); none for commands.
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    # What it was done to, by model label and id, and as it read then.
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.BigIntegerField(null=True, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    # {"field": [before, after]} for an edit; other facts (audience, schedule) for the rest.
    changes = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=400, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.target_repr}"


# --- The transactional outbox (alerts/outbox/) ----------------------------------------


class OutboxEmail(models.Model):
    """One transactional email to send: recorded in the transaction that makes it due,
    sent by a task (batched per provider call where the provider personalises),
    retried with backoff, re-queued by the sweeper if its task was lost. So nobody
    told "check your inbox" goes without the email because Redis or the provider
    blinked."""

    class Kind(models.TextChoices):
        CONFIRMATION = "confirmation", "Confirmation of a consent request"
        PREFERENCES = "preferences", "Preferences link"
        REENGAGE = "reengage", "Still want these? (re-engagement)"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENDING = "sending", "With a worker"
        SENT = "sent", "Handed to the provider"
        HELD = "held", "Held back by the per-address cooldown"
        FAILED = "failed", "Refused or given up"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    subscriber = models.ForeignKey(Subscriber, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="+")
    request = models.ForeignKey(ConsentRequest, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="outbox_emails")
    address = models.EmailField(max_length=254)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A claim: a worker holds the row until then (a dead worker's rows come back).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=200, blank=True)
    last_error = models.CharField(max_length=400, blank=True)

    class Meta:
        indexes = [
            # What the sender claims and the sweeper looks for: open rows by due time.
            models.Index(fields=["next_attempt_at"], name="outbox_open_due",
                         condition=Q(status__in=["pending", "sending"])),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.address} ({self.status})"


# --- The publishing API: integration tokens and idempotent writes --------------------


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """One newsroom integration's key to the publishing API (the CMS, a script).

    The token is `sp_<prefix>_<secret>`: the prefix, public, finds the row; only a
    SHA-256 of the whole token is kept, so the token itself is shown once, when an
    admin creates it, and a copy of this table opens nothing. The secret has 256 bits
    of entropy, so a fast hash is enough (there is no dictionary to try)."""

    class Scope(models.TextChoices):
        DRAFT = "draft", "Write drafts"
        PUBLISH = "draft+publish", "Write drafts, and publish, schedule and stop alerts"

    name = models.CharField(max_length=100, help_text="Which integration uses it, e.g. “CMS”.")
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.DRAFT)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (sp_{self.prefix}_…)"

    @property
    def can_publish(self) -> bool:
        return self.scope == self.Scope.PUBLISH


class IdempotentRequest(models.Model):
    """The first answer to a write sent with an `Idempotency-Key`, replayed to every
    retry of the same request by the same token until `expires_at`. The unique
    (token, key) makes a concurrent retry wait for the first request's transaction and
    then replay its answer, so the write happens once."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response = models.TextField(blank=True)
    location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["token", "key"], name="idempotency_key_per_token")]

    def __str__(self) -> str:
        return f"{self.key} → {self.status_code}"


# --- Outgoing webhooks: the newsroom's endpoints and the outbox of their events ------


class WebhookEndpoint(models.Model):
    """A URL of the newsroom's own systems that is told, signed per the Standard
    Webhooks spec with its own secret, when the chosen events happen."""

    class Event(models.TextChoices):
        ALERT_PUBLISHED = "alert.published", "An alert was published"
        ALERT_SENT = "alert.sent", "An alert finished sending (with its totals)"
        ALERT_FAILED = "alert.failed", "An alert failed to send"
        ALERT_CANCELLED = "alert.cancelled", "An alert was stopped or its schedule cancelled"
        CORRECTION_SENT = "correction.sent", "A correction or update was sent"
        SUBSCRIBER_CONFIRMED = "subscriber.confirmed", "A reader confirmed their subscription"
        SUBSCRIBER_UNSUBSCRIBED = "subscriber.unsubscribed", "A reader unsubscribed"
        SUBSCRIBER_SUPPRESSED = "subscriber.suppressed", "An address was suppressed (bounce, complaint)"

    name = models.CharField(max_length=100)
    url = models.URLField("URL", max_length=500)
    # whsec_<base64 of 24 random bytes>, the Standard Webhooks form; kept as it is, since
    # signing needs it, and shown to staff so they can give it to the receiver.
    secret = models.CharField(max_length=100, editable=False)
    events = models.JSONField(default=list, help_text="The events this endpoint is sent.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # While the endpoint fails, one message at a time probes it, after a doubling pause;
    # its other messages wait rather than each spend a timeout (outbound/delivery.py).
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    paused_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.name


class WebhookMessage(models.Model):
    """The outbox: one event for one endpoint, written in the transaction of what
    happened, delivered by a Celery task, retried with backoff until the endpoint
    answers 2xx or WEBHOOK_MAX_ATTEMPTS run out. Its `message_id` (the webhook-id
    header) is the same on every attempt, so a receiver can tell a repeat."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    message_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=40)
    payload = models.TextField()  # the exact body, so that every attempt signs the same bytes
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["next_attempt_at"], name="webhook_message_due",
                                condition=Q(status__in=["pending", "sending"]))]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at delivering a webhook message: when, how long, and what came back."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="tries")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=400, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error[:40]} at {self.at:%H:%M:%S}"
