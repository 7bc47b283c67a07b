"""An MQTT broker inside this process (amqtt), so the demo and the tests need nothing installed.

The broker runs on its own asyncio event loop in a background thread and listens on 127.0.0.1 only:
it is a twin of mosquitto for one machine, not something to expose. It speaks MQTT 3.1.1 only, so
clients connect with ``MqttSettings(host=broker.host, port=broker.port, protocol="3.1.1")``.

Port 0 (the default) lets the operating system pick a free port at the first start, without the race
of probing for one; later restarts reuse that port so connected clients can reconnect to it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import Any, Final

from amqtt.broker import Broker

from agent.errors import MessageBusError

logger = logging.getLogger(__name__)

_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 10.0


class EmbeddedBroker:
    """Start with :meth:`start` (or ``with EmbeddedBroker() as broker:``), stop with :meth:`stop`.

    Both are idempotent; after :meth:`stop` the broker may be started again on the same port.
    """

    mqtt_protocol: Final = "3.1.1"
    """The only MQTT version amqtt accepts from paho clients."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None  # amqtt.broker.Broker; amqtt ships no type information

    @property
    def is_running(self) -> bool:
        return self._broker is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Open the listener; return once clients can connect. MessageBusError if the port is taken."""
        if self.is_running:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"embedded-mqtt-broker-{self.port}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._broker = asyncio.run_coroutine_threadsafe(self._start_broker(), loop).result(
                _START_TIMEOUT_SECONDS
            )
        except Exception as exc:  # amqtt wraps the OSError of a taken port in its own BrokerError
            self._stop_loop()
            raise MessageBusError(f"cannot start the embedded MQTT broker on {self.address}: {exc}") from exc
        logger.info("embedded MQTT broker listening on %s", self.address)

    def stop(self) -> None:
        """Disconnect every client, close the listener and end the broker's thread."""
        if self._loop is None:
            return
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(_shut_down(broker), self._loop).result(_STOP_TIMEOUT_SECONDS)
            except Exception:  # stopping must always finish; say what went wrong and carry on
                logger.exception("the embedded MQTT broker on %s did not shut down cleanly", self.address)
        self._stop_loop(broker)
        logger.info("embedded MQTT broker on %s stopped", self.address)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    # Deliberate repetition: the context-manager protocol's __exit__ signature.
    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _start_broker(self) -> Any:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous authentication: no $SYS publisher task, no packet logger.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = _ConnectionTrackingBroker(config, loop=asyncio.get_running_loop())
        await broker.start()
        if self.port == 0:
            self.port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        return broker

    def _stop_loop(self, broker: Any = None) -> None:
        loop, thread = self._loop, self._thread
        self._loop, self._thread = None, None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(_close_listeners_and_cancel_tasks(broker), loop).result(
            _STOP_TIMEOUT_SECONDS
        )
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_SECONDS)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class _ConnectionTrackingBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker, keeping every client connection's stream so that stopping can close them all.

    amqtt closes a connection only when its session ends; one still waiting for its CONNECT packet when
    the broker stops (a client connecting at that moment, or one that died half-way) is left open, and its
    socket outlives the event loop (ResourceWarnings "unclosed socket" and "loop is closed" when it is
    garbage-collected).
    """

    def __init__(self, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.open_streams: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        self.open_streams.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self.open_streams.discard(writer)


async def _shut_down(broker: Any) -> None:
    """End every client connection, then shut the broker down.

    amqtt's own shutdown cancels each connection's reader task, and on Python 3.11 ``asyncio.wait_for``
    can swallow that cancellation when a packet arrives at the same moment (fixed in 3.12): the reader
    then waits forever and so does the shutdown (seen in about one restart in three with two clients).
    A reader that sees end-of-file stops by itself, so feed it that first.
    """
    for _session, handler in list(broker.sessions.values()):
        if handler is not None and handler.reader is not None:
            handler.reader.feed_eof()
    await broker.shutdown()


async def _close_listeners_and_cancel_tasks(broker: Any) -> None:
    """Release whatever a shutdown left: the listening socket, open client connections, running tasks.

    Closing the listener here too means a later start can bind the port again, and no unclosed socket
    turns into a ResourceWarning (an error under pytest's warning filter).
    """
    if broker is not None:
        for server in broker._servers.values():
            if server.instance is not None:
                server.instance.close()
        for stream in list(broker.open_streams):
            stream.close()
    current = asyncio.current_task()
    remaining = [task for task in asyncio.all_tasks() if task is not current]
    for task in remaining:
        task.cancel()
    await asyncio.gather(*remaining, return_exceptions=True)
