"""Alarms to Prometheus Alertmanager (API v2), and optionally to a generic webhook.

Alertmanager wants the *current* set of firing alerts, re-sent periodically (it
resolves an alert nobody re-sent within its ``resolve_timeout``, 5 min by default), and
an explicit ``endsAt`` to resolve one at once. So the sender keeps the state, not a
queue of events:

- :class:`AlertBook` (plain, deterministic) turns alarm snapshots into what
  Alertmanager must hear: every *firing* alert (an alarm out of limits and not
  shelved: ``ACTIVE`` or ``ACKNOWLEDGED``) and the *resolved* notices not yet
  delivered (returned, cleared, shelved, or a severity left behind by an escalation -
  the labels carry the severity, so an escalation is the WARNING alert resolving and
  the CRITICAL one firing);
- :class:`AlertmanagerSender` (one thread) applies snapshots as they come, posts all
  of it at once when something changed and every ``resend_interval`` otherwise, and
  retries with backoff while Alertmanager is down. Nothing is lost while it is down:
  the book holds the latest state of every alarm and the resolved notices until a
  post succeeds. Ingest is never blocked: :meth:`AlertmanagerSender.submit` only
  appends to a list under a lock.

Labels: ``alertname`` (``TemperatureOutOfLimits`` or ``TemperatureStale``), ``stream``
and ``severity`` (``warning``, ``critical``, ``stale``). Annotations (strings, as
Alertmanager requires): ``summary``, ``value``, ``limit``, ``limit_name``, ``alarm_id``,
``state``, ``most_severe_value``. ``startsAt`` is when the alarm was triggered;
``endsAt`` is only sent to resolve.

:class:`WebhookSender` posts every alarm event as JSON (the REST ``AlarmEvent``
shape), in order, with the same retry rules, from a bounded queue (the oldest events
are dropped - counted and logged - beyond ``max_queue``).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from tps.alarms.model import AlarmEvent, AlarmSnapshot, AlarmState, Severity
from tps.ingest.backoff import Backoff
from tps.model import ns_to_datetime
from tps.redact import redact_url

logger = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
MAX_INBOX = 10_000
"""Snapshots waiting for the sender thread before they are coalesced per alarm."""

Alert = dict[str, Any]
LabelKey = tuple[str, str, str]


def alert_labels(snapshot: AlarmSnapshot) -> dict[str, str]:
    """The label set that identifies the alert of ``snapshot`` in Alertmanager."""
    name = "TemperatureStale" if snapshot.severity is Severity.STALE else "TemperatureOutOfLimits"
    return {"alertname": name, "stream": snapshot.stream,
            "severity": str(snapshot.severity).lower()}


def is_firing(snapshot: AlarmSnapshot) -> bool:
    """Out of limits, not shelved, not cleared: Alertmanager should show it."""
    return snapshot.out_of_limits and snapshot.state in (AlarmState.ACTIVE,
                                                         AlarmState.ACKNOWLEDGED)


def build_alert(snapshot: AlarmSnapshot, ends_at_ns: int | None = None) -> Alert:
    """One ``postableAlert`` of the API v2 (``endsAt`` only when resolving)."""
    if snapshot.severity is Severity.STALE:
        summary = (f"Stream {snapshot.stream} sent no reading for {snapshot.value:g} s "
                   f"(staleAfter {snapshot.limit:g} s)")
    else:
        where = "above" if (snapshot.limit_name or "").endswith("High") else "below"
        summary = (f"Stream {snapshot.stream} is {where} {snapshot.limit_name} "
                   f"{_num(snapshot.limit)}: {_num(snapshot.value)}")
    alert: Alert = {
        "labels": alert_labels(snapshot),
        "annotations": {
            "summary": summary,
            "value": _num(snapshot.value),
            "limit": _num(snapshot.limit),
            "limit_name": snapshot.limit_name or "",
            "alarm_id": snapshot.id,
            "state": str(snapshot.state),
            "most_severe_value": _num(snapshot.most_severe_value),
        },
        "startsAt": _rfc3339(snapshot.triggered_at_ns),
    }
    if ends_at_ns is not None:
        alert["endsAt"] = _rfc3339(max(ends_at_ns, snapshot.triggered_at_ns))
    return alert


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _rfc3339(time_ns: int) -> str:
    return ns_to_datetime(time_ns).isoformat().replace("+00:00", "Z")


def _key(labels: dict[str, str]) -> LabelKey:
    return labels["alertname"], labels["stream"], labels["severity"]


class AlertBook:
    """What Alertmanager must be told (see the module docstring). Not thread-safe."""

    def __init__(self) -> None:
        self._firing: dict[str, tuple[LabelKey, Alert]] = {}
        self._resolved: dict[LabelKey, Alert] = {}
        self.dirty = False

    def apply(self, snapshot: AlarmSnapshot) -> None:
        """Take the alarm's latest state into account."""
        known = self._firing.get(snapshot.id)
        if is_firing(snapshot):
            alert = build_alert(snapshot)
            key = _key(alert["labels"])
            if known is not None and known[0] != key:
                self._resolve(known[1], key=known[0], at_ns=snapshot.updated_at_ns)
            self._resolved.pop(key, None)
            self._firing[snapshot.id] = (key, alert)
            self.dirty = True
        elif known is not None:
            del self._firing[snapshot.id]
            ends = (snapshot.cleared_at_ns or snapshot.returned_at_ns
                    or snapshot.updated_at_ns)
            self._resolve(build_alert(snapshot, ends), key=known[0])
            self.dirty = True

    def _resolve(self, alert: Alert, *, key: LabelKey, at_ns: int | None = None) -> None:
        if at_ns is not None:
            alert = {**alert, "endsAt": _rfc3339(at_ns)}
        self._resolved[key] = alert

    def payload(self) -> list[Alert]:
        """Every resolved notice not yet delivered, then every firing alert."""
        return [*self._resolved.values(), *(alert for _, alert in self._firing.values())]

    def delivered(self, payload: Sequence[Alert]) -> None:
        """``payload`` reached Alertmanager: forget the resolved notices it carried."""
        sent = {_key(alert["labels"]) for alert in payload if "endsAt" in alert}
        for key in sent:
            alert = self._resolved.get(key)
            if alert is not None and alert in payload:
                del self._resolved[key]
        self.dirty = bool(self._resolved)

    def firing(self) -> int:
        """How many alerts are firing."""
        return len(self._firing)


class _HttpPoster:
    """POSTs JSON to one URL over a kept-alive connection (one thread uses it)."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self.url = url
        self.shown_url = redact_url(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: Any) -> None:
        """Send; OSError (unreachable) or RuntimeError (refused with a status) on failure."""
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self._path, body=data, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection: once more
                raise OSError(f"{self.shown_url} is unreachable: {exc or type(exc).__name__}") \
                    from exc
            if response.will_close:
                self.close()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"{self.shown_url} answered HTTP {response.status}: "
                                   f"{answer[:200].decode(errors='replace')}")
            return

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class AlertmanagerSender:
    """The delivery thread for one Alertmanager (see the module docstring).

    ``url`` is Alertmanager's base URL (``http://host:9093``); ``resend_interval`` must
    be shorter than Alertmanager's ``resolve_timeout``.
    """

    def __init__(self, url: str, *, resend_interval: float = 60.0, timeout: float = 5.0,
                 backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._poster = _HttpPoster(url.rstrip("/") + ALERTS_PATH, timeout)
        self.url = url
        self.shown_url = redact_url(url)
        self._resend = resend_interval
        self._backoff = backoff or Backoff(initial=0.5, cap=10.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[AlarmSnapshot] = []
        self._stopped = False
        self._active = True
        self._activated = False
        self._book = AlertBook()
        self._thread = threading.Thread(target=self._run, name="alertmanager-sender",
                                        daemon=True)
        self.posts = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None

    def start(self) -> AlertmanagerSender:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (alerts not delivered yet are Alertmanager's to time out)."""
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout)
        self._poster.close()

    def submit(self, events: Sequence[AlarmEvent]) -> None:
        """Hand over alarm events (any thread; never blocks on the network)."""
        with self._wake:
            self._inbox.extend(event.alarm for event in events)
            if len(self._inbox) > MAX_INBOX:
                latest = {snapshot.id: snapshot for snapshot in self._inbox}
                self._inbox = list(latest.values())
            self._wake.notify_all()

    def restore(self, snapshots: Sequence[AlarmSnapshot]) -> None:
        """Open alarms after a restart: firing ones are (re-)sent at once."""
        with self._wake:
            self._inbox.extend(snapshots)
            self._wake.notify_all()

    def set_active(self, active: bool) -> None:
        """Cluster mode: post only while this instance holds the alert-sender lease. A
        standby sender keeps following the alarms (so a take-over posts the current
        firing set and the resolved notices at once) but posts nothing."""
        with self._wake:
            if active and not self._active:
                self._activated = True
            self._active = active
            self._wake.notify_all()

    @property
    def active(self) -> bool:
        """True while this sender posts (always, outside cluster mode)."""
        return self._active

    def health(self) -> dict[str, Any]:
        """For /health: reachable as of the last attempt, counters, firing alerts."""
        return {"url": self.shown_url, "posts": self.posts, "failures": self.failures,
                "lastError": self.last_error, "firing": self._book.firing(),
                "ok": self.last_error is None}

    def _idle_for(self, now: float, next_send: float, retry_at: float) -> float:
        """Seconds until there is something to post (<= 0: now)."""
        if self._book.dirty:
            return retry_at - now
        if self._book.firing():
            return max(next_send, retry_at) - now
        return self._resend

    def _run(self) -> None:
        next_send = 0.0  # when the firing set is due again (monotonic s)
        retry_at = 0.0   # after a failed post: not before this
        while True:
            with self._wake:
                while not self._inbox and not self._activated:
                    if self._stopped:
                        return
                    wait = (self._idle_for(self._clock(), next_send, retry_at)
                            if self._active else self._resend)
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                if self._stopped:
                    return
                inbox, self._inbox = self._inbox, []
                active, activated, self._activated = self._active, self._activated, False
            for snapshot in inbox:
                self._book.apply(snapshot)
            if not active:
                continue  # standby: follow the alarms, post nothing
            if activated:
                self._book.dirty = True  # taken over: tell Alertmanager everything now
            now = self._clock()
            if now < retry_at:
                continue
            if not (self._book.dirty or now >= next_send):
                continue
            payload = self._book.payload()
            if not payload:
                self._book.dirty = False
                next_send = now + self._resend
                continue
            try:
                self._poster.post(payload)
            except (OSError, RuntimeError) as exc:
                self.failures += 1
                delay = self._backoff.next_delay()
                retry_at = self._clock() + delay
                if self.last_error is None or self._backoff.attempts == 1:
                    logger.warning("Alertmanager at %s: posting %d alert(s) failed (%s); "
                                   "keeping them, retrying with backoff (next in %.1f s)",
                                   self.shown_url, len(payload), exc, delay)
                self.last_error = str(exc)
                continue
            if self.last_error is not None:
                logger.info("Alertmanager at %s reached again: %d alert(s) delivered",
                            self.shown_url, len(payload))
            self.posts += 1
            self.last_error = None
            self.last_success = self._clock()
            self._backoff.reset()
            retry_at = 0.0
            self._book.delivered(payload)
            next_send = self._clock() + self._resend


class WebhookSender:
    """Posts each alarm event (JSON) to a webhook, in order, retrying with backoff."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_queue: int = 10_000,
                 backoff: Backoff | None = None) -> None:
        self._poster = _HttpPoster(url, timeout)
        self.url = url
        self.shown_url = redact_url(url)
        self._backoff = backoff or Backoff(initial=0.5, cap=10.0)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[AlarmEvent] = deque()
        self._max_queue = max_queue
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-webhook", daemon=True)
        self.active = True
        """Cluster mode: events are taken only while this instance holds the
        alert-sender lease (a standby drops them: at most once across a take-over)."""
        self.posts = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> WebhookSender:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread."""
        self._stopped.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join(timeout)
        self._poster.close()

    def submit(self, events: Sequence[AlarmEvent]) -> None:
        """Queue events (any thread, never blocks); beyond the bound the oldest go."""
        if not self.active:
            return
        with self._wake:
            self._queue.extend(events)
            overflow = len(self._queue) - self._max_queue
            if overflow > 0:
                for _ in range(overflow):
                    self._queue.popleft()
                self.dropped += overflow
                logger.warning("Alarm webhook %s: queue full, dropped the %d oldest "
                               "event(s) (%d in all)", self.shown_url, overflow, self.dropped)
            self._wake.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._wake:
                while not self._queue and not self._stopped.is_set():
                    self._wake.wait(1.0)
                if self._stopped.is_set():
                    return
                event = self._queue[0]
            try:
                self._poster.post(event.to_json())
            except (OSError, RuntimeError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                logger.warning("Alarm webhook %s: delivery failed (%s); retrying in %.1f s",
                               self.shown_url, exc, delay)
                self._stopped.wait(delay)
                continue
            self.posts += 1
            self.last_error = None
            self._backoff.reset()
            with self._wake:
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()
