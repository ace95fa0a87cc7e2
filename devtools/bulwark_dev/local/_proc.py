"""Process helpers shared by the local stack: free ports, child processes that die with us, stop by PID."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for children that cannot report the port they bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs `ldconfig -p`: once per parent, on its first child (not at import: every Lambda worker
    # imports this module and starts no child), and never in a forked child.
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    return ctypes.CDLL(libc_name, use_errno=True) if libc_name else None


def _die_with_parent(libc: ctypes.CDLL) -> None:
    # Runs in the child between fork and exec: if the stack process is killed hard (SIGKILL, a crashed test runner),
    # the kernel sends SIGTERM to this child, so no java or worker process outlives the stack. Only a system call
    # here: the child of a threaded parent must not start processes or take locks.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def preexec_for_child() -> Callable[[], None] | None:
    libc = _libc()
    return functools.partial(_die_with_parent, libc) if libc is not None else None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate by PID, then kill after ``timeout`` seconds; always reaps the child."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
