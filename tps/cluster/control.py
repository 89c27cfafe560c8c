"""Feed ownership -> the supervisor: start and stop this instance's readers.

The coordinator (on the NATS link's loop) decides; the supervisor actor starts and
stops readers. This adapter sits between them: it never blocks the loop nor the
supervisor's mailbox. Each command goes to one worker thread, in order, which asks the
supervisor and waits for its answer - for a stop, until the reader's socket is closed
and what it read was handed to the writer (``Supervisor.settled``) - then reports to
the coordinator through the callback it was given. One worker keeps a stream's start
and stop in the order the coordinator gave them.

In cluster mode the supervisor keeps no registry of its own (the cluster's is in
NATS): a started stream is added to it, a stopped one removed. Alarms follow on the
same thread (:class:`~tps.cluster.alarms.AlarmOwnership`): a stream's alarms are taken
over before its reader starts, and handed over (or, for a removed stream, returned)
after its reader stopped and before its lease is deleted.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Protocol

from tps.cluster.alarms import AlarmOwnership
from tps.config.settings import FeedConfig
from tps.errors import StreamExists, UnknownStream

logger = logging.getLogger(__name__)

_ANSWER_TIMEOUT = 30.0


class SupervisorLike(Protocol):
    """What the adapter needs from the supervisor's proxy (pykka futures)."""

    def add_stream(self, feed: FeedConfig, started: bool = True) -> Any:
        """Register and start a stream."""

    def remove_stream(self, name: str) -> Any:
        """Stop and forget a stream."""

    def settled(self, names: list[str] | None = None) -> Any:
        """A future of a future that completes once ``names`` have stopped and flushed."""


class SupervisorReaderControl:
    """A :class:`~tps.cluster.ownership.ReaderControl` driving the supervisor."""

    def __init__(self) -> None:
        self._supervisor: SupervisorLike | None = None
        self._alarms: AlarmOwnership | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cluster-readers")

    def bind(self, supervisor: SupervisorLike, alarms: AlarmOwnership | None = None) -> None:
        """Attach the supervisor (it is started after the cluster node is built) and the
        alarm keeper's ownership (None: no alarms here)."""
        self._supervisor = supervisor
        self._alarms = alarms

    def start_reading(self, feed: FeedConfig) -> None:
        """Start a reader for ``feed`` (returns at once)."""
        self._submit(lambda: self._start(feed))

    def stop_reading(self, name: str, on_stopped: Callable[[], None],
                     removed: bool = False) -> None:
        """Stop the reader of ``name``; ``on_stopped`` once its socket is closed."""
        self._submit(lambda: self._stop(name, on_stopped, removed))

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the worker thread, after the queued commands."""
        def guarded() -> None:
            try:
                job()
            except Exception:  # a failed job must not stop the worker
                logger.exception("Reader-control job failed")
        self._submit(guarded)

    def close(self) -> None:
        """Finish the queued commands and stop the worker thread."""
        self._worker.shutdown(wait=True, cancel_futures=False)

    def _submit(self, job: Callable[[], None]) -> None:
        try:
            self._worker.submit(job)
        except RuntimeError:  # shut down: the process is stopping
            logger.debug("Reader command after shutdown ignored")

    def _start(self, feed: FeedConfig) -> None:
        supervisor = self._supervisor
        if supervisor is None:
            logger.error("Cannot start stream %s: no supervisor yet", feed.name)
            return
        if self._alarms is not None:
            try:
                self._alarms.adopt(feed.name)
            except Exception as exc:  # noqa: BLE001 - reported; the readings matter more
                logger.error("Could not take over the alarms of stream %s: %s", feed.name,
                             exc)
        try:
            supervisor.add_stream(feed, True).get(timeout=_ANSWER_TIMEOUT)
        except StreamExists:
            logger.warning("Stream %s is already running here", feed.name)
        except Exception as exc:  # noqa: BLE001 - reported; the lease stays ours
            logger.error("Could not start the reader of stream %s: %s", feed.name, exc)

    def _stop(self, name: str, on_stopped: Callable[[], None], removed: bool) -> None:
        supervisor = self._supervisor
        try:
            if supervisor is not None:
                supervisor.remove_stream(name).get(timeout=_ANSWER_TIMEOUT)
                supervisor.settled([name]).get(timeout=_ANSWER_TIMEOUT).result(
                    timeout=_ANSWER_TIMEOUT)
        except UnknownStream:
            pass  # not running here: stopped already
        except Exception as exc:  # noqa: BLE001 - the lease is handed back regardless
            logger.error("Stopping the reader of stream %s failed (%s); handing it over "
                         "anyway", name, exc)
        finally:
            try:
                if self._alarms is not None and self._alarms.owns(name):
                    self._alarms.release(name, removed)
            finally:
                on_stopped()
