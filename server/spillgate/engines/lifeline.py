"""An engine never outlives the gateway that launched it.

A gateway killed by any signal (kill -9, the OOM killer) runs no clean-up, so the engine it
supervised would keep its memory, its GPU and its port, and the restarted gateway's engine
could not bind. Two mechanisms, both armed by `bind_to_parent()` first thing in an engine
process when the supervisor set PARENT_PID_ENV:

- Linux's parent-death signal (prctl PR_SET_PDEATHSIG): the kernel sends SIGTERM when the
  gateway dies. It survives execve, so it also reaches vLLM, which `spillgate engine vllm`
  execs into (vLLM then stops its own workers, as on any SIGTERM).
- A lifeline pipe (`watch_stdin=True`): the supervisor keeps the write end of the engine's
  stdin; the kernel closes it when the gateway dies, and a thread here reads EOF, sends
  SIGTERM to this process, and exits it outright if that has not worked within GRACE_S.
  Works on any POSIX system, and whatever thread of the gateway spawned the engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PARENT_PID_ENV = "SPILLGATE_PARENT_PID"
PR_SET_PDEATHSIG = 1
GRACE_S = 15.0


class ParentGone(RuntimeError):
    """The gateway that launched this engine had already exited."""


def bind_to_parent(*, watch_stdin: bool) -> bool:
    """Arm both mechanisms when launched by a gateway; False (nothing armed) otherwise.

    Raises ParentGone when the gateway died before the signal could be armed (the engine
    was reparented already): the engine must then not start at all."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit():
        return False
    _parent_death_signal(signal.SIGTERM)
    if os.getppid() != int(parent):
        raise ParentGone(f"the gateway (pid {parent}) exited before the engine started")
    if watch_stdin:
        threading.Thread(target=_watch_lifeline, args=(sys.stdin.fileno(),),
                         name="gateway-lifeline", daemon=True).start()
    return True


def _parent_death_signal(signum: int) -> None:
    if not sys.platform.startswith("linux"):
        return  # the lifeline pipe alone covers other systems
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def _watch_lifeline(fd: int) -> None:
    """Block on the pipe until the gateway's end closes, then stop this process."""
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass  # the gateway never writes; anything read is ignored
    log.warning("the gateway is gone: stopping the engine")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)  # a clean stop ends the process (and this daemon thread) first
    os._exit(1)
