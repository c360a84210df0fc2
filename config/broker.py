"""The Redis broker transport, with one fix: a worker that loses Redis while it
holds a message must carry on, not die.

On a lost connection kombu closes the channel and puts the messages the worker holds
unacknowledged (a task running with acks_late, a prefetched one) back on their queue,
in the Redis it has just lost. With kombu 5.7 the attempt raises (AttributeError from
the half-closed connection, or a connection error), and Celery, seeing it outside any
task, stops the worker as "unrecoverable": one Redis blip, and nothing drains signups
or sends alerts until someone restarts it. Those messages are still in Redis's
unacknowledged set, and come back by themselves after the visibility timeout once
Redis is back (or were lost with a Redis that restarted empty, which the sweeper
makes up for from the database), so giving up on putting them back here loses
nothing. Used for redis:// broker URLs (settings.CELERY_BROKER_TRANSPORT); rediss://
keeps kombu's own transport, whose TLS defaults come with the scheme.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except (AttributeError, RedisError, OSError) as error:
            logger.warning("Broker lost with %d message(s) unacknowledged; they come back from Redis after the "
                           "visibility timeout (%s)", len(self._delivered), error)
            self._delivered.clear()
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
