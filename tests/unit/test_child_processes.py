"""Children of the local stack die with it (bulwark_dev.local._proc.preexec_for_child), even when it is killed hard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bulwark_dev.local._proc import preexec_for_child

pytestmark = pytest.mark.skipif(preexec_for_child() is None, reason="PR_SET_PDEATHSIG is Linux's")

# A stack stand-in: starts a long-sleeping child the way the stack starts java and the Lambda workers, prints the
# child's PID, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from bulwark_dev.local._proc import preexec_for_child
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=preexec_for_child())
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] != "Z"  # a zombie has died already
    except FileNotFoundError:
        return False


def test_a_child_dies_when_its_parent_is_killed_hard() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_hook_between_fork_and_exec_starts_no_process() -> None:
    """It runs in the forked child of a threaded parent, where starting a process is unsafe; ctypes.util.find_library
    (which runs `ldconfig -p`) used to run there, a second fork for every Lambda environment started. Run in a
    throwaway process: the hook sets that process's own parent-death signal. And importing the module starts
    nothing: every Lambda worker imports it."""
    script = textwrap.dedent(
        """
        import ctypes.util, subprocess
        from bulwark_dev.local._proc import preexec_for_child
        hook = preexec_for_child()  # in the parent, before the fork, as subprocess does
        def refuse(*args, **kwargs):
            raise AssertionError("the hook started a process")
        subprocess.Popen = refuse
        ctypes.util.find_library = refuse
        hook()
        print("ok")
        """
    )
    imported = subprocess.run(
        [sys.executable, "-c", "import ctypes.util\nctypes.util.find_library = None\nimport bulwark_dev.local._proc"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert imported.returncode == 0, imported.stderr
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
