"""Limits and alarms over HTTP in cluster mode: the same facade, on any instance.

:class:`ClusterAlarmsApi` answers what :class:`~tps.api.alarms.AlarmsApi` answers, from
the cluster instead of a local keeper:

- open and recently cleared alarms come from this instance's view of the cluster's
  alarm log (:class:`tps.cluster.alarms.ClusterAlarmView`), the older history from the
  store (the writers store every event);
- acknowledge and shelve go to the instance that reads the alarm's stream, as a NATS
  request; its answer comes once the resulting event is in the log. No owner (the
  stream is stopped or being taken over), or no answer within 5 s, is
  ``AlarmsUnavailable`` - REST 503, GraphQL ``SERVICE_UNAVAILABLE`` - and retrying is
  safe (acknowledging twice changes nothing);
- limits live in the shared registry: set on any instance, followed by the owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tps.alarms.lifecycle import check_comment, check_shelve_seconds
from tps.alarms.limits import Limits
from tps.alarms.model import AlarmSnapshot
from tps.api.alarms import AlarmsApi, check_alarm_id
from tps.api.context import ApiContext
from tps.cluster.alarms import raise_reply, request_action
from tps.cluster.node import ClusterNode
from tps.errors import AlarmClosed, AlarmsUnavailable, UnknownAlarm, UnknownStream

logger = logging.getLogger(__name__)

_SEEN_TIMEOUT = 2.0


class ClusterAlarmsApi(AlarmsApi):
    """Alarms and limits for the HTTP layer of a cluster instance (any role)."""

    def __init__(self, ctx: ApiContext, node: ClusterNode) -> None:
        super().__init__(ctx, board=node.alarm_board, keeper=None, health=node.alarm_health)
        self._node = node

    def limits_of(self, stream: str) -> Limits | None:
        """The limits the stream's owner evaluates it against (None: none or unknown)."""
        try:
            return self._node.limits_of(stream)
        except UnknownStream:
            return None

    def _known(self, alarm_id: str) -> None:
        check_alarm_id(alarm_id)
        view = self.view()
        if view is None or not view.restored:
            raise AlarmsUnavailable("this instance is still reading the cluster's alarm log; "
                                    "try again in a moment")
        snapshot = view.find(alarm_id)
        if snapshot is None:
            raise UnknownAlarm(alarm_id)
        if not snapshot.is_open:
            raise AlarmClosed(alarm_id)

    async def acknowledge(self, alarm_id: str, comment: str | None) -> AlarmSnapshot:
        """Acknowledge through the instance that reads the alarm's stream."""
        self._known(alarm_id)
        return await self._route("acknowledge", alarm_id, {"comment": check_comment(comment)})

    async def shelve(self, alarm_id: str, seconds: object, comment: str | None
                     ) -> AlarmSnapshot:
        """Shelve through the instance that reads the alarm's stream."""
        self._known(alarm_id)
        checked = check_shelve_seconds(seconds)
        return await self._route("shelve", alarm_id,
                                 {"seconds": checked, "comment": check_comment(comment)})

    async def _route(self, action: str, alarm_id: str, extra: dict[str, Any]) -> AlarmSnapshot:
        view = self.view()
        snapshot = view.find(alarm_id) if view is not None else None
        if snapshot is None:
            raise UnknownAlarm(alarm_id)
        stream = snapshot.stream
        owner = self._node.owner(stream)
        if owner is None:
            raise AlarmsUnavailable(f"no instance reads stream {stream} right now (stopped, "
                                    "or being taken over); try again")
        link = self._node.link
        body = {"action": action, "id": alarm_id, "stream": stream, **extra}
        reply = await asyncio.wrap_future(link.submit(lambda: request_action(link, owner, body)))
        return raise_reply(reply)

    async def get_limits(self, stream: str) -> Limits | None:
        """The stream's limits from the shared registry (UnknownStream)."""
        return self._node.limits_of(stream)

    async def set_limits(self, stream: str, limits: Limits | None) -> Limits | None:
        """Set or clear the limits cluster-wide; answers once this instance's registry
        view shows the change (so a GET right after sees it)."""
        entry = await asyncio.wrap_future(self._node.set_limits(stream, limits))
        deadline = time.monotonic() + _SEEN_TIMEOUT
        while time.monotonic() < deadline:
            seen = self._node.streams().get(stream)
            if seen is not None and seen.revision >= entry.revision:
                break
            await asyncio.sleep(0.01)
        return limits
