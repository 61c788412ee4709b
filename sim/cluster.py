"""The Dask cluster that sweeps, segments and verify run on: an embedded ``LocalCluster``, or
the scheduler at ``--scheduler``, whose address and handshake are checked first
(:func:`check_scheduler`) so that a wrong address, a server that is not Dask or one that says
nothing is a one-line error within seconds, never a hang or an exabyte allocation."""

from __future__ import annotations

import logging
import socket
import struct
import time

from nitihw.golden.errors import ToolError
from nitihw.golden.parallel import available_cores

#: seconds the scheduler has to answer
SCHEDULER_TIMEOUT = 5.0


class SchedulerError(ToolError):
    """A ``--scheduler`` address that is not one or where no Dask scheduler answers."""


def parse_scheduler(address: str) -> tuple[str, int, str]:
    """``tcp://HOST:PORT`` or ``HOST:PORT`` (``[V6]:PORT`` for an IPv6 address): ``(host, port,
    tcp://HOST:PORT)``; anything else (``tls://``, ``ucx://``, no port) is a
    :class:`SchedulerError`, before anything connects."""
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    where = f"--scheduler {address!r}"
    form = "give tcp://HOST:PORT or HOST:PORT"
    if scheme.lower() != "tcp":
        raise SchedulerError(
            f"{where}: only tcp:// schedulers are supported, not {scheme}://; {form}"
        )
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            raise SchedulerError(f"{where}: no port in it; {form}")
    if ":" in host and not rest.startswith("["):
        raise SchedulerError(f"{where}: an IPv6 address goes in brackets, tcp://[ADDRESS]:PORT")
    if not host or any(c in host for c in "/[]@ \t"):
        raise SchedulerError(f"{where}: no host name or address in it; {form}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SchedulerError(
            f"{where}: the port must be a number in 1..65535, got {port!r}; {form}"
        )
    shown = f"[{host}]" if ":" in host else host
    return host, int(port), f"tcp://{shown}:{int(port)}"


def _recv(sock: socket.socket, n: int, deadline: float, address: str) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SchedulerError(
                f"--scheduler {address}: not a Dask scheduler (no handshake within "
                f"{SCHEDULER_TIMEOUT:g} s)"
            )
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(data), 65536))
        except TimeoutError:
            continue
        except OSError as exc:
            raise SchedulerError(
                f"--scheduler {address}: the connection failed ({exc.strerror or exc})"
            ) from None
        if not chunk:
            raise SchedulerError(
                f"--scheduler {address}: not a Dask scheduler (it closed the connection "
                "without a handshake)"
            )
        data += chunk
    return data


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT) -> str:
    """Connect to ``address`` and read the handshake a Dask scheduler sends first (a small
    msgpack dict in Dask's frames), all within ``timeout`` s: a refused connection, a silent
    server or one that sends anything else is a one-line :class:`SchedulerError`, where Dask's
    own client would hang (silence) or try to allocate what garbage asks for. Returns the
    ``tcp://`` address."""
    import msgpack

    host, port, address = parse_scheduler(address)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise SchedulerError(
            f"--scheduler {address}: cannot connect (no answer within {timeout:g} s)"
        ) from None
    except OSError as exc:
        raise SchedulerError(
            f"--scheduler {address}: cannot connect ({exc.strerror or exc})"
        ) from None
    bad = f"--scheduler {address}: not a Dask scheduler (its first message is not Dask's handshake"
    with sock:
        (size,) = struct.unpack("Q", _recv(sock, 8, deadline, address))
        if not 16 <= size <= 65536:  # a handshake is about 60 bytes
            raise SchedulerError(f"{bad}: it announces {size:,} bytes)")
        body = _recv(sock, size, deadline, address)
        (frames,) = struct.unpack_from("Q", body)
        if not 1 <= frames <= 16 or 8 * (1 + frames) > size:
            raise SchedulerError(f"{bad})")
        lengths = struct.unpack_from(f"{frames}Q", body, 8)
        start = 8 * (1 + frames)
        if start + sum(lengths) != size:
            raise SchedulerError(f"{bad})")
        try:
            info = msgpack.unpackb(body[start : start + lengths[0]], raw=False)
        except Exception:  # any decoding failure: not msgpack, so not Dask
            info = None
        if not isinstance(info, dict) or not {"compression", "python"} & set(info):
            raise SchedulerError(f"{bad})")
    return address


def dask_client(scheduler: str | None, workers: int | None):
    """A Dask client, and the embedded cluster it owns (None for ``--scheduler``, which is
    checked first: :func:`check_scheduler`)."""
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        address = check_scheduler(scheduler)
        seconds = f"{SCHEDULER_TIMEOUT:g}s"
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": seconds}):
                return Client(address, timeout=seconds), None
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"--scheduler {address}: cannot connect ({exc})") from None
    cluster = LocalCluster(
        n_workers=workers or available_cores(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster
