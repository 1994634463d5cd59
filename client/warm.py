"""The caller side of the warm fork server of a deployed site: torch, MONAI and the app imported once, not per message.

Flower 1.42 starts a new ``flwr-clientapp`` process for every message a SuperNode receives, and importing
torch and MONAI is most of such a process's start (seconds per round, on the critical path). In a deployment
the ClientApp entry (``client/entry.py``) imports only Flower and numpy and hands each message to this
server (``client/warm_server.py``), starting it on first use:

1. The server imports ``client.app`` (torch, MONAI, the model library) once and listens on a Unix socket in a
   folder only its user can enter; a connecting process must run as the same user (``SO_PEERCRED``).
2. For every task it forks a child: a copy of the warm process in which nothing of an earlier task exists.
   The child takes over the caller's stdout/stderr (passed with the request), runs the handler of
   ``client/app.py`` on the message, and sends back the reply's content and the node state. A task that
   raises or crashes ends only its child; the caller gets the error, the server serves the next task.
3. The socket's name holds a hash of the app folder, the node id and the interpreter, so a new app version
   (a new FAB) gets a new server; an idle server exits after :data:`IDLE_SECONDS`.

Results are those of a fresh process: the handlers seed everything from (seed, round, site), and a fork
starts from the state right after the imports. The parent never runs a torch operation or touches CUDA, so a
child may still use a GPU.

Wire format, both ways: frames of an 8-byte big-endian length and the bytes. Request: kind (``train`` or
``evaluate``), the message (Flower protobuf), the context (protobuf), with the caller's fds 1 and 2 attached
to the first frame. Reply: ``ok`` + reply content (RecordDict protobuf) + node state (RecordDict protobuf),
or ``error`` + the child's traceback text.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.serde import context_to_proto, message_to_proto, recorddict_from_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

IDLE_SECONDS = 900.0  # an unused server exits after this long (a run's rounds are much closer together)
START_TIMEOUT_SECONDS = 300.0  # first use: the server imports torch and MONAI before it listens
DISABLE_ENV = "MTMEDFORMER_WARM_CLIENT"  # "0": every message runs in the ClientApp process, as Flower does
IDLE_ENV = "MTMEDFORMER_WARM_IDLE_SECONDS"  # overrides IDLE_SECONDS for servers started from now on
_HEADER = struct.Struct(">Q")


class WarmWorkerError(RuntimeError):
    """The task ended without a reply from the warm server."""


class WarmUnavailable(WarmWorkerError):
    """No warm server can be used here (socket folder unusable, server failed to start); nothing ran."""


def enabled(context: Context) -> bool:
    """Use the warm server: a deployed site (``data-manifest`` in the node config), unless switched off."""
    return "data-manifest" in context.node_config and os.environ.get(DISABLE_ENV, "1") != "0"


def app_dir() -> Path:
    """The folder holding the ``client`` package that runs (the installed FAB in a deployment)."""
    return Path(__file__).resolve().parents[1]


def socket_path(app: Path, node_id: int) -> Path:
    """The server's socket: in a per-user folder (mode 0700), named after app folder, node and interpreter."""
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"mtmedformer-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise WarmUnavailable(f"cannot create the warm server's socket folder {folder}: {err}") from None
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise WarmUnavailable(f"{folder} must belong to uid {os.getuid()} with mode 0700; remove it and retry")
    key = hashlib.sha256(f"{app}\0{node_id}\0{sys.executable}".encode()).hexdigest()[:16]
    return folder / f"{key}.sock"  # short: a Unix socket path is limited to ~107 bytes


# ---- frames ------------------------------------------------------------------------------------------------


def send(conn: socket.socket, *frames: bytes, fds: list[int] | None = None) -> None:
    """Write ``frames`` (8-byte big-endian length, then the bytes); ``fds`` travel with the first frame."""
    for i, frame in enumerate(frames):
        data = _HEADER.pack(len(frame)) + frame
        if i == 0 and fds:
            sent = socket.send_fds(conn, [data[:_HEADER.size]], fds)
            conn.sendall(data[sent:])
        else:
            conn.sendall(data)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {left} of {n} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(conn: socket.socket, count: int, with_fds: bool = False) -> tuple[list[bytes], list[int]]:
    """Read ``count`` frames and, with ``with_fds``, up to 2 file descriptors sent with the first.

    Raises
    ------
    EOFError
        If the peer closed the connection before all frames arrived.
    """
    fds: list[int] = []
    frames = []
    for i in range(count):
        if i == 0 and with_fds:
            head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
            if not head:
                raise EOFError("connection closed before the request")
            head += _recv_exact(conn, _HEADER.size - len(head))
        else:
            head = _recv_exact(conn, _HEADER.size)
        frames.append(_recv_exact(conn, _HEADER.unpack(head)[0]))
    return frames, fds


# ---- caller side (the short-lived flwr-clientapp process) ---------------------------------------------------


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    return conn


def _start_server(path: Path, app: Path) -> socket.socket:
    """Start the server for ``path`` unless another process just did (a lock file orders them); connect."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        path.unlink(missing_ok=True)  # a server that died left its socket file behind
        log_path = path.with_suffix(".log")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(app), os.environ.get("PYTHONPATH")]))}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(  # our own module, this interpreter
                [sys.executable, "-m", "client.warm_server", "--socket", str(path),
                 "--idle-seconds", os.environ.get(IDLE_ENV, str(IDLE_SECONDS))],
                cwd=app, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            conn = _connect(path)
            if conn is not None:
                return conn
            if process.poll() is not None:
                break
            time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise WarmUnavailable(
        f"the warm ClientApp server did not start (exit code {process.poll()}; log {log_path}):\n{tail}\n"
        f"Set {DISABLE_ENV}=0 in the SuperNode's environment to run every message in its own process."
    )


def call(kind: str, msg: Message, context: Context) -> Message:
    """Run the ``kind`` handler of ``client/app.py`` on ``msg`` in the warm server; update ``context.state``.

    Raises
    ------
    WarmUnavailable
        If no server can be started (nothing ran: the caller may run the handler itself).
    WarmWorkerError
        If the task ended without a reply (it may have run: do not repeat it).
    RuntimeError
        If the handler raised (the message holds its traceback); Flower sends it as the reply's error.
    """
    app = app_dir()
    path = socket_path(app, context.node_id)
    conn = _connect(path) or _start_server(path, app)
    with conn:
        send(conn, kind.encode(), message_to_proto(msg).SerializeToString(),
              context_to_proto(context).SerializeToString(), fds=[1, 2])
        try:
            (status,), _ = recv(conn, 1)
            if status == b"ok":
                (content, state), _ = recv(conn, 2)
            else:
                (text,), _ = recv(conn, 1)
        except EOFError as err:
            raise WarmWorkerError(f"the warm ClientApp task ended without a reply ({err}); see the site log") from None
    if status != b"ok":
        raise RuntimeError(f"ClientApp {kind} failed in the warm server:\n{text.decode(errors='replace')}")
    context.state.clear()
    context.state.update(recorddict_from_proto(ProtoRecordDict.FromString(state)))
    return Message(content=recorddict_from_proto(ProtoRecordDict.FromString(content)), reply_to=msg)
