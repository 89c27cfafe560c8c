"""Answering ``alarms(active, stream, after, before)``: plain functions, no I/O.

- ``active: true``: every alarm not yet CLEARED (the keeper's view; the store is not
  asked).
- otherwise the history: alarms *triggered* in the window, each in its newest known
  state - the keeper's for open and recently cleared alarms, else the latest event the
  store holds. ``active: false`` keeps only the CLEARED ones. Without ``after`` the
  window starts :data:`DEFAULT_HISTORY` before ``before`` (or now), so an open question
  cannot ask for years of history; at most :data:`MAX_ALARMS` alarms are answered (the
  newest).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tps.alarms.model import AlarmEvent, AlarmSnapshot, AlarmState

logger = logging.getLogger(__name__)

DEFAULT_HISTORY_NS = 7 * 86_400 * 1_000_000_000
"""Seven days: the default window of a history question without ``after``."""
MAX_ALARMS = 1000


def history_window(after_ns: int | None, before_ns: int | None,
                   now_ns: int) -> tuple[int, int | None]:
    """The event window to read for alarms triggered in [after, before]."""
    if after_ns is None:
        after_ns = (before_ns if before_ns is not None else now_ns) - DEFAULT_HISTORY_NS
    return after_ns, None  # later events of those alarms may be after ``before``


def select_alarms(
    known: Iterable[AlarmSnapshot],
    events: Iterable[AlarmEvent],
    *,
    active: bool | None,
    stream: str | None,
    after_ns: int | None,
    before_ns: int | None,
    now_ns: int,
) -> list[AlarmSnapshot]:
    """The answer, oldest trigger first (see the module docstring).

    ``known`` are the keeper's open and recently cleared alarms (newest state), and
    ``events`` the store's events of the history window (any order).
    """
    newest: dict[str, tuple[int, AlarmSnapshot]] = {}
    for event in events:
        held = newest.get(event.alarm.id)
        if held is None or event.seq > held[0]:
            newest[event.alarm.id] = (event.seq, event.alarm)
    alarms = {alarm_id: snapshot for alarm_id, (_, snapshot) in newest.items()}
    for snapshot in known:
        alarms[snapshot.id] = snapshot
    lower: int | None = after_ns
    if active is not True:
        lower, _ = history_window(after_ns, before_ns, now_ns)
    chosen = []
    for snapshot in alarms.values():
        cleared = snapshot.state is AlarmState.CLEARED
        if active is True and cleared:
            continue
        if active is False and not cleared:
            continue
        if stream is not None and snapshot.stream != stream:
            continue
        if lower is not None and snapshot.triggered_at_ns < lower:
            continue
        if before_ns is not None and snapshot.triggered_at_ns > before_ns:
            continue
        chosen.append(snapshot)
    chosen.sort(key=lambda s: (s.triggered_at_ns, s.id))
    return chosen[-MAX_ALARMS:]
