"""Stop signals end a command promptly: SIGINT with exit 130, SIGTERM with exit 143.

Left to Python and Prefect, a signal unwinds the main thread, and then the flow run's
task runner waits for the tasks still running in its threads (a download from a stalled
mirror, an epoch of training), and the interpreter waits for them again at exit: a
stopped command ran on for minutes, and a second Ctrl-C did not help. Prefect also swaps
in its own SIGTERM handler while a flow runs, so a handler of ours may not even be called.

So ``install`` does two things. Its handler raises ``Interrupted`` in the main thread,
which unwinds the command as far as it can (Prefect marks the run Crashed if its task
threads let it get that far). And a watchdog thread learns of every SIGINT and SIGTERM
through ``signal.set_wakeup_fd``, whichever Python handler is installed: the first one
gives the command GRACE_SECONDS to end by itself, a second one ends it at once. Ending
it is ``exit_now``: one line on stderr, this process's temporary files removed, the
normal exit handlers (which stop Prefect's embedded server and a local Dask cluster)
given CLEANUP_SECONDS, then ``os._exit``, which no running thread can hold up. The
same ending serves a command that cannot go on for another reason, with its own exit
code and line (a Prefect API gone mid-run, ``cli.backend``); a stop signal, whenever
it comes, still sets the exit code.

Nothing the pipeline writes can be left partial under its final name: every file is
written to a hidden temporary and renamed into place when complete (core.files).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
from typing import Any, NoReturn

from core import files

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds the command has, after the first signal, to end by itself (a run with no
# task in flight gets to record itself as Crashed); then the watchdog ends it.
GRACE_SECONDS = 1.5
# Seconds the exit handlers get; the embedded server is told to stop at once and
# finishes on its own if that is not enough. GRACE + CLEANUP stays well inside 5 s.
CLEANUP_SECONDS = 2.0
# serve and stack stop their runner (and stack its server) themselves, in ~2-3 s; they
# are ended this long after a signal that reached our handler, should that not happen.
SERVING_GRACE_SECONDS = 3.0


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a stop signal; Prefect treats it as a Ctrl-C."""


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + its number."""
    return 128 + signum


def install(enforce: bool = True) -> None:
    """Make SIGINT and SIGTERM end this process promptly (see the module docstring).

    Call once, from the main thread, before any flow starts. A signal that the process
    was started with ignored (``nohup``, a background job of a script) stays ignored.
    With ``enforce=False`` (``serve``, ``stack``: Prefect's runner and our stack stop
    their runs and server themselves, in ~2-3 s) only a signal that reaches our own
    handler arms the watchdog, after SERVING_GRACE_SECONDS: a SIGINT, or a SIGTERM
    before Prefect's runner installs its own. ``received`` reports the signal either way.
    """
    _STATE["enforce"] = enforce
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupted)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _STATE["wakeup"] = (reader, writer)  # kept open for the life of the process
    watch = threading.Thread(
        target=_watch, args=(reader, enforce), name="stop-signals", daemon=True
    )
    watch.start()


def received() -> int | None:
    """The first stop signal this process received, if any."""
    return _STATE["signal"]


def _raise_interrupted(signum: int, frame: Any) -> None:
    _note(signum)  # main() may reach exit_now before the watchdog has read the signal
    if not _STATE["enforce"]:  # serve/stack (see install)
        _arm_watchdog(SERVING_GRACE_SECONDS)
    raise Interrupted


def _arm_watchdog(grace: float) -> None:
    watchdog = threading.Timer(grace, exit_now)
    watchdog.daemon = True
    watchdog.start()


def _watch(reader: socket.socket, enforce: bool) -> None:
    # The C-level handler writes each signal's number here, in whatever thread it lands.
    received = 0
    while data := reader.recv(64):
        for signum in data:
            if signum not in STOP_SIGNALS:
                continue
            _note(signum)
            if not enforce:
                continue
            received += 1
            if received > 1:
                exit_now()
            _arm_watchdog(GRACE_SECONDS)


def _note(signum: int) -> None:
    """Remember the first stop signal: it sets the exit code."""
    if _STATE["signal"] is None:
        _STATE["signal"] = signum


def exit_now(code: int | None = None, message: str | None = None) -> NoReturn:
    """End the process (see the module docstring): with exit ``code`` and the one line
    ``message``, or, without them or once a stop signal has come, for that signal
    (SIGINT if none). Safe from any thread; a second call while the first cleans up
    exits at once."""
    if code is None or _STATE["signal"] is not None:
        signum = _STATE["signal"] or signal.SIGINT
        code = exit_code(signum)
        message = f"mnist-pipeline: stopped by {signal.Signals(signum).name}"
    if not _EXITING.acquire(blocking=False):
        os._exit(_or_signal(code))
    _last_word(f"{message}\n")
    files.remove_own_temporaries()
    cleanup = threading.Thread(target=_run_exit_handlers, daemon=True)
    cleanup.start()
    cleanup.join(CLEANUP_SECONDS)
    files.remove_own_temporaries()  # again: a thread may have started one meanwhile
    os._exit(_or_signal(code))


def _or_signal(code: int) -> int:
    """``code``, unless a stop signal has come meanwhile: Ctrl-C always means 130."""
    signum = _STATE["signal"]
    return code if signum is None else exit_code(signum)


def _last_word(line: str) -> None:
    """Write ``line`` as the last thing on stderr. Threads still running, and the exit
    handlers, may go on logging (a training epoch, a server going away): nothing of that
    is news once the process is stopping, so stderr is pointed at /dev/null first."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        stderr = os.dup(2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        os.write(stderr, line.encode())


def _run_exit_handlers() -> None:
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()


# Signals are process-wide, and so is what they need: the first signal received, and
# the wakeup socket pair, which must stay open as long as the process runs.
_STATE: dict[str, Any] = {"signal": None, "wakeup": None, "enforce": True}
_EXITING = threading.Lock()
