"""A fake service for tests and development: an ASGI app served by uvicorn in a background
thread, on 127.0.0.1 only (the fake model, the fake transcription endpoint)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self


class LoopbackServer:
    """Subclasses give `_app()` and a `_name`; `_on_stop()` ends open streams at once. Use it
    as a context manager, or call `start()` and `stop()`."""

    _name = "loopback"

    def __init__(self, *, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None

    def _app(self) -> Any:
        raise NotImplementedError

    def _on_stop(self) -> None:
        """Called first when stopping (before uvicorn is told to exit)."""

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self._name} server is not started")
        return self._port

    def start(self) -> Self:
        import uvicorn

        if self._thread is not None:
            raise RuntimeError(f"the {self._name} server is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=self._name.replace(" ", "-"),
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the {self._name} server did not start")
            time.sleep(0.01)
        sock.close()  # uvicorn listens on its own duplicate of the socket
        return self

    def stop(self) -> None:
        """Stop serving: open streams end at once, the thread is joined."""
        if self._thread is None:
            return
        self._on_stop()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError(f"the {self._name} server thread did not stop")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
