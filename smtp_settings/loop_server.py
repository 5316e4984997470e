"""An asyncio server run by an event loop on a thread of its own: how the SMTP sandbox and the
SMTP relay serve, whether in a management command or inside a test."""

import asyncio
import ssl
import threading
from collections.abc import Callable


class LoopServer:
    def __init__(self, name: str):
        self.name = name  # the thread's, with the port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def start(
        self, protocol: Callable[[], asyncio.Protocol], host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen on `host`:`port` (0: any free port) and serve each connection with a new
        `protocol()`, which may use `self.loop`; the port."""
        self.loop = asyncio.new_event_loop()
        self._server = self.loop.run_until_complete(
            self.loop.create_server(protocol, host, port, ssl=ssl_context, backlog=1024)
        )
        port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{self.name}-{port}", daemon=True)
        self._thread.start()
        return port

    def stop_listening(self) -> None:
        """Take no more connections; those open go on."""
        self.loop.call_soon_threadsafe(self._server.close)

    def stop(self, timeout_s: float = 5) -> None:
        """Stop listening, end every connection (their tasks are cancelled) and the loop."""
        if self.loop is None:
            return

        async def shutdown():
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout_s)
        self.loop.close()
        self.loop = None
