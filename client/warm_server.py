"""The warm fork server of a deployed site (``python -m client.warm_server``, started by ``client/warm.py``).

It imports ``client.app`` (torch, MONAI, the model library) once, listens on the Unix socket
:func:`client.warm.socket_path` names and forks a child per task: a copy of the warm process in which nothing
of an earlier task exists. The child takes over the caller's stdout/stderr, runs the handler on the message
and replies (wire format: ``client/warm.py``). A connecting process must run as the same user
(``SO_PEERCRED``). The server exits when idle for ``--idle-seconds`` or when its socket file is removed or
replaced. It is an entry point: no project module imports it.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path

from flwr.common.serde import context_from_proto, message_from_proto, recorddict_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from client import app as client_app  # the heavy import, once per server
from client import warm
from client.warm import recv, send


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _run_task(conn: socket.socket, handlers: dict) -> None:
    """In the forked child: read one request, run it, reply. Never returns to the server loop."""
    frames, fds = recv(conn, 3, with_fds=True)
    for target, fd in zip((1, 2), fds, strict=False):  # the task's output goes where the caller's would
        os.dup2(fd, target)
        os.close(fd)
    kind, message, ctx = frames
    try:
        msg = message_from_proto(ProtoMessage.FromString(message))
        context = context_from_proto(ProtoContext.FromString(ctx))
        reply = handlers[kind.decode()](msg, context)
        frames_out = [b"ok", recorddict_to_proto(reply.content).SerializeToString(),
                      recorddict_to_proto(context.state).SerializeToString()]
    except BaseException:  # the caller turns it into the reply's error, as Flower does in-process
        frames_out = [b"error", traceback.format_exc().encode()]
    sys.stdout.flush()
    sys.stderr.flush()
    send(conn, *frames_out)


def serve(path: Path, idle_seconds: float = warm.IDLE_SECONDS) -> None:
    """Listen on ``path`` and fork one child per task until idle for ``idle_seconds``."""
    handlers = client_app.HANDLERS
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(8)
    inode = path.stat().st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    last = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([listener], [], [], 5.0)
            while True:  # reap finished children
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            if not ready:
                if time.monotonic() - last > idle_seconds or not _still_ours(path, inode):
                    return
                continue
            conn, _ = listener.accept()
            last = time.monotonic()
            if _peer_uid(conn) != os.getuid():
                conn.close()
                continue
            if os.fork() == 0:  # child
                listener.close()
                code = 0
                try:
                    _run_task(conn, handlers)
                except BaseException:  # a broken request ends this child only
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            conn.close()
    finally:
        listener.close()
        if _still_ours(path, inode):
            path.unlink(missing_ok=True)


def _still_ours(path: Path, inode: int) -> bool:
    """Whether the socket file at ``path`` is still the one this server bound (not removed or replaced)."""
    try:
        return path.stat().st_ino == inode
    except FileNotFoundError:
        return False


def main() -> None:
    """``python -m client.warm_server --socket PATH``: run the server (started by :func:`call`, not by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle-seconds", type=float, default=warm.IDLE_SECONDS)
    args = parser.parse_args()
    serve(args.socket, args.idle_seconds)


if __name__ == "__main__":
    main()
