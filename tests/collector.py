"""A real OpenTelemetry collector for tests: rotel (``rotel-agent``, PyPI ``rotel``) on loopback.

:class:`Collector` starts ``rotel-agent start`` as a child process on two free loopback ports
(OTLP/gRPC and OTLP/HTTP), exporting to ``blackhole`` with the debug log on at ``detailed``
verbosity, so that it prints every span and metric point it receives on stdout. That stdout is
kept in a file (``rotel.out``; stderr in ``rotel.err``) and parsed back here into
:class:`ReceivedSpan` and :class:`MetricPoint`: tests assert on what a real collector decoded off
the wire, not on what our exporter meant to send.

What rotel prints, and how it is read back, is :mod:`rotel_output` (pure functions over text).

The debug log is written when a request is received, before rotel's batching, so a span is in
the file ~0.2 ms after the exporter's call returned. rotel accepts connections ~15 ms after
launch; SIGTERM takes it 15 ms to ~2 s to exit (longer while clients hold connections).

"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterator

from rotel_output import BLOCK_HEADER, Event, Exemplar, Link, MetricPoint, ReceivedSpan, parse, parse_value

__all__ = ["BlackHole", "Collector", "CollectorError", "Event", "Exemplar", "Link", "MetricPoint",
           "ReceivedSpan", "free_ports", "parse", "parse_value", "rotel_binary"]


class CollectorError(AssertionError):
    """The collector did not start, died, or did not receive what a test waited for."""


def rotel_binary() -> str:
    """Path of the ``rotel-agent`` binary shipped inside the ``rotel`` wheel."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise CollectorError("the rotel package is not installed (pip install rotel): it ships rotel-agent")
    path = os.path.join(list(spec.submodule_search_locations)[0], "rotel-agent")
    if not os.access(path, os.X_OK):
        raise CollectorError(f"rotel-agent not found or not executable at {path}")
    return path


def free_ports(n: int = 2) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- the process ---------------------------------------------------------------------------------
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """A test process that ends without stopping its collector (a crash, an exception in a
    script) does not leave rotel running."""
    for c in list(_LIVE):
        with contextlib.suppress(Exception):
            c.kill()


class Collector:
    """One rotel-agent child process on loopback and what it printed.

    ``start()`` / ``stop()`` (SIGTERM, then SIGKILL after ``timeout_s``) / ``kill()`` (SIGKILL:
    a crash) / ``restart()`` (same ports) / ``paused()`` (SIGSTOP..SIGCONT: a collector that
    accepts connections in the kernel and never answers). ``clear()`` forgets what was received
    so far; ``spans()``, ``metrics()`` and the ``wait_for_*`` methods read what came after.
    """

    def __init__(self, directory: str | os.PathLike, *, binary: str | None = None,
                 start_timeout_s: float = 30.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.binary = binary or rotel_binary()
        self.out_path = self.directory / "rotel.out"
        self.err_path = self.directory / "rotel.err"
        self.start_timeout_s = start_timeout_s
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._offset = 0
        self._cache: tuple[int, int, list, list] = (0, 0, [], [])  # offset, bytes parsed, spans, points
        self._paused = False

    # -- endpoints -----------------------------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL (``OTEL_EXPORTER_OTLP_ENDPOINT`` style; the SDK appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return self.http_endpoint + "/v1/traces"

    @property
    def metrics_url(self) -> str:
        return self.http_endpoint + "/v1/metrics"

    def endpoint(self, protocol: str) -> str:
        if protocol == "grpc":
            return self.grpc_endpoint
        if protocol in ("http/protobuf", "http"):
            return self.http_endpoint
        raise ValueError(f"protocol must be 'grpc' or 'http/protobuf', got {protocol!r}")

    def otel_env(self, protocol: str = "grpc", **extra: str) -> dict[str, str]:
        """The standard ``OTEL_*`` variables that send traces here (for a subprocess)."""
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint(protocol)}
        env.update(extra)
        return env

    # -- lifecycle -----------------------------------------------------------------------------
    def _command(self) -> list[str]:
        return [self.binary, "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                "--exporter", "blackhole",
                "--debug-log", "traces", "--debug-log", "metrics", "--debug-log-verbosity", "detailed",
                "--pid-file", str(self.directory / "rotel.pid"),
                "--log-file", str(self.directory / "rotel.log")]

    def start(self) -> Collector:
        """Start on new free ports (others if rotel could not bind them); returns when both accept.
        ``restart()`` keeps the ports."""
        if self.running:
            return self
        last = None
        for _ in range(5):
            self.grpc_port, self.http_port = free_ports(2)
            try:
                self._launch()
                return self
            except CollectorError as e:  # most likely another process took a port meanwhile
                last = e
        raise last  # type: ignore[misc]

    def _launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTEL_", "OTEL_"))}
        env["NO_COLOR"] = "1"
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, cwd=self.directory)
        _LIVE.add(self)
        self.starts += 1
        self._paused = False
        deadline = time.monotonic() + self.start_timeout_s
        pending = {self.grpc_port, self.http_port}
        while pending:
            if self.proc.poll() is not None:
                raise CollectorError(f"rotel-agent exited with {self.proc.returncode} while starting on ports "
                                     f"{self.grpc_port}/{self.http_port}\n{self.describe()}")
            for port in list(pending):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pending.discard(port)
            if not pending:
                break
            if time.monotonic() > deadline:
                self.kill()
                raise CollectorError(f"rotel-agent did not accept connections on {sorted(pending)} within "
                                     f"{self.start_timeout_s:.0f} s\n{self.describe()}")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``; returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            self._resume()
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        return p.returncode

    def kill(self) -> int | None:
        """SIGKILL now (a crashed collector); returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        self._paused = False
        return p.returncode

    def restart(self, *, kill: bool = False) -> Collector:
        """Stop (``kill=True``: SIGKILL) and start again on the same ports."""
        self.kill() if kill else self.stop()
        if self.grpc_port is None:
            return self.start()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                self._launch()
                return self
            except CollectorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # a port still held by the old process's connections

    def _resume(self) -> None:
        if self._paused and self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[Collector]:
        """SIGSTOP the collector for the block: the kernel still accepts connections, nothing
        answers (a hung collector); SIGCONT after, even if the block raised."""
        if not self.running:
            raise CollectorError("paused(): the collector is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._paused = True
        try:
            yield self
        finally:
            self._resume()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what it printed -----------------------------------------------------------------------
    def _read_bytes(self) -> bytes:
        try:
            with open(self.out_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        return data[:data.rfind(b"\n") + 1]  # a block still being written ends without its newline

    def _parsed(self) -> tuple[list[ReceivedSpan], list[MetricPoint]]:
        """Parse what arrived since ``clear()``, incrementally: everything before the last
        ``Resource... #`` header is complete (each header resets the parser), parsed once and
        kept; only the last resource block is parsed again on every call."""
        data = self._read_bytes()
        offset, done, spans, points = self._cache
        if offset != self._offset or done > len(data):
            offset, done, spans, points = self._offset, 0, [], []
        last = None
        for last in BLOCK_HEADER.finditer(data, done):
            pass
        if last is not None and last.start() > done:
            more_spans, more_points = parse(data[done:last.start()].decode("utf-8", "replace"))
            spans, points, done = spans + more_spans, points + more_points, last.start()
        self._cache = (offset, done, spans, points)
        tail_spans, tail_points = parse(data[done:].decode("utf-8", "replace"))
        return spans + tail_spans, points + tail_points

    def clear(self) -> None:
        """Forget everything received so far (what ``spans()``/``metrics()`` return starts here)."""
        try:
            self._offset = self.out_path.stat().st_size
        except FileNotFoundError:
            self._offset = 0

    def output(self) -> str:
        """Raw collector stdout since the last ``clear()``."""
        return self._read_bytes().decode("utf-8", "replace")

    def spans(self, name: str | None = None, *, service: str | None = None) -> list[ReceivedSpan]:
        """Spans received since the last ``clear()``, in arrival order (optionally one name or
        one ``service.name``)."""
        spans, _ = self._parsed()
        return [s for s in spans if (name is None or s.name == name)
                and (service is None or s.resource.get("service.name") == service)]

    def metrics(self, name: str | None = None, *, service: str | None = None) -> list[MetricPoint]:
        """Metric points received since the last ``clear()``, in arrival order."""
        _, points = self._parsed()
        return [p for p in points if (name is None or p.name == name)
                and (service is None or p.resource.get("service.name") == service)]

    def _wait(self, read: Callable[[], list], done: Callable[[list], bool], what: str, timeout_s: float) -> list:
        deadline = time.monotonic() + timeout_s
        while True:
            got = read()
            if done(got):
                # Settle: rotel may still be printing the request that completed the count.
                size = -1
                while size != self._size():
                    size = self._size()
                    time.sleep(0.02)
                return read()
            if time.monotonic() > deadline:
                raise CollectorError(f"waited {timeout_s:.0f} s for {what}; got {len(got)}: "
                                     f"{[getattr(x, 'name', x) for x in got][:20]}\n{self.describe()}")
            if not self.running:
                raise CollectorError(f"the collector is not running while waiting for {what}\n{self.describe()}")
            time.sleep(0.02)

    def _size(self) -> int:
        try:
            return self.out_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_spans(self, n: int | None = None, *, until: Callable[[list[ReceivedSpan]], bool] | None = None,
                       name: str | None = None, service: str | None = None,
                       timeout_s: float = 30.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` spans (of ``name``/``service``) arrived, or ``until(spans)``."""
        done = until or (lambda got: len(got) >= (n or 1))
        what = f"{n or 1} spans" + (f" named {name!r}" if name else "") + (f" of {service!r}" if service else "")
        return self._wait(lambda: self.spans(name, service=service), done, what if until is None else "until()",
                          timeout_s)

    def wait_for_metrics(self, n: int | None = None, *, until: Callable[[list[MetricPoint]], bool] | None = None,
                         name: str | None = None, service: str | None = None,
                         timeout_s: float = 30.0) -> list[MetricPoint]:
        """Wait until at least ``n`` metric points (of ``name``/``service``) arrived, or ``until(points)``."""
        done = until or (lambda got: len(got) >= (n or 1))
        what = f"{n or 1} metric points" + (f" named {name!r}" if name else "")
        return self._wait(lambda: self.metrics(name, service=service), done, what if until is None else "until()",
                          timeout_s)

    def describe(self, max_chars: int = 4000) -> str:
        """The process's state and the tail of its own output, for failure messages."""
        state = ("not started" if self.proc is None else
                 f"pid {self.proc.pid}, " + ("running" if self.proc.poll() is None else f"exited {self.proc.returncode}"))
        parts = [f"rotel-agent ({state}; grpc {self.grpc_port}, http {self.http_port}; output in {self.directory})"]
        for label, path in (("stdout", self.out_path), ("stderr", self.err_path)):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            tail = data[-max_chars:].decode("utf-8", "replace")
            if tail.strip():
                parts.append(f"--- rotel {label} (last {len(tail)} chars) ---\n{tail}")
        return "\n".join(parts)


# ---- an endpoint that never answers ---------------------------------------------------------------
class BlackHole:
    """A loopback TCP port that accepts connections, reads and discards everything, and never
    replies: an OTLP endpoint that hangs every export until the exporter's own timeout."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self.bytes_received = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        self._sock.setblocking(False)
        sel.register(self._sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                if key.fileobj is self._sock:
                    with contextlib.suppress(OSError):
                        conn, _ = self._sock.accept()
                        conn.setblocking(False)
                        self._conns.append(conn)
                        self.connections += 1
                        sel.register(conn, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    self.bytes_received += len(data)
                    if not data:  # the client gave up: forget the connection
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
