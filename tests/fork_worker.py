"""Child processes for the SIGKILL tests, forked from one Python that imported the SDK.

A fresh interpreter spends about 0.4 s importing the SDK before it does anything; the
crash tests start about thirty runners. :func:`spawn` runs ``code`` as
``python -c code *args`` would (``sys.argv``, ``__name__ == "__main__"``, stdout and
stderr pipes, exit status, negative for a signal) in a child forked from a *zygote*: a
process started once per test session that has imported the SDK, the journals and
Redis, and never runs an event loop, a thread or a connection of its own. Each child is
a real process: SIGKILL ends it mid-write exactly as it would end a fresh interpreter.

Run as ``python -m tests.fork_worker FD``, this module is the zygote. For each request
(the code, the arguments and three or four pipe ends, passed over a Unix socket) it forks a
supervisor, which forks the child, writes the child's pid to the status pipe, waits for
it and writes its exit status.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_MAX_REQUEST = 1 << 20


class StdinPipe:
    """The writing end of a child's stdin (small writes: they never block)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        os.write(self._fd, data)

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Child:
    """A child from :func:`spawn`: what these tests use of ``asyncio.subprocess.Process``."""

    def __init__(self, pid: int, pipes: list[tuple[asyncio.StreamReader, asyncio.BaseTransport]],
                 stdin: StdinPipe | None = None) -> None:
        self.pid = pid
        #: With ``spawn(..., stdin=True)``: what the child reads on its stdin.
        self.stdin = stdin
        (self.stdout, _), (self.stderr, _), (status, _) = pipes
        self._transports = [transport for _, transport in pipes]
        #: The exit status once the child has ended (negative: the signal that ended it).
        self.returncode: int | None = None
        self._ended = asyncio.ensure_future(self._wait_for_status(status))

    async def _wait_for_status(self, status: asyncio.StreamReader) -> int:
        line = await status.readline()
        if not line:
            raise RuntimeError(f"the supervisor of child {self.pid} died without a status")
        self.returncode = int(line)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            # (No such process: it has just ended, and its status is on its way.)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def wait(self) -> int:
        """The exit status, once the child has ended; output not read by then is dropped."""
        code = await asyncio.shield(self._ended)
        for transport in self._transports:
            transport.close()
        if self.stdin is not None:
            self.stdin.close()
        return code

    async def communicate(self) -> tuple[bytes, bytes]:
        out, err = await asyncio.gather(self.stdout.read(), self.stderr.read())
        await self.wait()
        return out, err


async def spawn(code: str, *args: str, stdin: bool = False) -> Child:
    """Run ``code`` with ``args`` as ``python -c code *args`` would, in a forked child
    (its stdin a pipe the test writes to with ``stdin=True``, else ``/dev/null``)."""
    zygote = _zygote()
    ends = [os.pipe() for _ in range(3)]  # stdout, stderr, status
    theirs = [write for _, write in ends]
    stdin_read, stdin_write = os.pipe() if stdin else (-1, -1)
    if stdin:
        theirs.append(stdin_read)
    request = json.dumps({"code": code, "argv": ["-c", *args]}).encode()
    try:
        with zygote.lock:
            socket.send_fds(zygote.sock, [request], theirs)
    finally:
        for fd in theirs:
            os.close(fd)
    pipes = [await _reader(read) for read, _ in ends]
    line = await pipes[2][0].readline()
    if not line:
        for _, transport in pipes:
            transport.close()
        if stdin:
            os.close(stdin_write)
        raise RuntimeError("the zygote did not start the child")
    return Child(int(line), pipes, StdinPipe(stdin_write) if stdin else None)


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    return reader, transport


class _Zygote:
    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.lock = threading.Lock()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fork_worker", str(theirs.fileno())],
                cwd=_ROOT, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        if self.sock.recv(16) != b"ready":
            raise RuntimeError("the zygote did not start")
        atexit.register(self.close)

    def close(self) -> None:
        self.sock.close()  # the zygote ends when its socket does
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_started: list[_Zygote] = []


def _zygote() -> _Zygote:
    if not _started:
        _started.append(_Zygote())
    return _started[0]


# -- the zygote's side -----------------------------------------------------------------


def _serve(fd: int) -> None:
    # Imported once, before any fork (the point of the zygote).
    import aurous_async
    import aurous_async._journal_redis
    import aurous_async._journal_sqlite
    import aurous_async.testing  # noqa: F401

    with contextlib.suppress(ImportError):  # without it, the Redis tests skip
        import redis.asyncio  # noqa: F401
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    sock.send(b"ready")
    while True:
        request, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 4)
        if not request:
            return  # the test process closed its end
        if os.fork() == 0:
            sock.close()
            _supervise(json.loads(request), *fds)
        for end in fds:
            os.close(end)


def _supervise(request: dict[str, object], out: int, err: int, status: int,
               stdin: int | None = None) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # so that waitpid sees the child
    pid = os.fork()
    if pid == 0:
        os.close(status)
        _run(request, out, err, stdin)
    for fd in (out, err, stdin):
        if fd is not None:
            os.close(fd)
    os.write(status, f"{pid}\n".encode())
    _, wait_status = os.waitpid(pid, 0)
    os.write(status, f"{os.waitstatus_to_exitcode(wait_status)}\n".encode())
    os._exit(0)


def _run(request: dict[str, object], out: int, err: int, stdin: int | None) -> None:
    source_in = os.open(os.devnull, os.O_RDONLY) if stdin is None else stdin
    for source, target in ((source_in, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    sys.argv = list(request["argv"])  # type: ignore[call-overload]
    code = 0
    try:
        exec(compile(str(request["code"]), "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as exit_:
        if isinstance(exit_.code, int) or exit_.code is None:
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
