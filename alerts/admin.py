"""The admin site: each capability registers its own models; this module loads them
all (Django's admin autodiscovery imports only `alerts.admin`) and puts the data-rights
actions on the subscriber list, where staff answer a reader's request."""

from __future__ import annotations

from .api import admin as api_admin  # noqa: F401  (registers ApiTokenAdmin)
from .digests import admin as digests_admin  # noqa: F401  (registers DigestRunAdmin)
from .outbound import admin as outbound_admin  # noqa: F401  (registers the webhook endpoints and messages)
from .publishing import admin as publishing_admin  # noqa: F401  (registers AlertAdmin, TopicAdmin)
from .rights.admin import erase_subscribers, export_subscriber_data
from .sending import admin as sending_admin  # noqa: F401  (registers BatchAdmin, DeliveryAdmin)
from .subscribers.admin import SubscriberAdmin

SubscriberAdmin.actions = [*SubscriberAdmin.actions, export_subscriber_data, erase_subscribers]
