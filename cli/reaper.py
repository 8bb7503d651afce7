"""Nothing a command started outlives it, even when the command is SIGKILLed.

A command stops what it started when it exits: the embedded Prefect server (a ``uvicorn``
child that Prefect starts), Dask workers, the stack's ``prefect server``. A SIGKILL (the
OOM killer, ``timeout -k``, a hard cancel) gives it no chance, and those children would
run on as orphans. So every command starts this small watcher first (``start``): a
separate process that holds the read end of a pipe whose write end only the command
holds. While the command lives, the watcher notes the command's descendants four times
a second (pid and start time, from /proc; a child started within the last quarter second
before a SIGKILL can be missed, since once its parent is gone nothing ties it to the
command). When the pipe reports end-of-file, the command
is gone, however it died; the watcher then stops the descendants it saw (SIGTERM, and
SIGKILL after 3 s), skipping any pid that now belongs to another process (start time
changed), and exits. After a normal exit there is nothing left to stop.

Linux only (it reads /proc); elsewhere ``start`` does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

# A process started less than this before the command is killed may be missed.
POLL_SECONDS = 0.25
TERM_GRACE_SECONDS = 3.0


def start() -> None:
    """Start the watcher of this process (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    read_end, write_end = os.pipe()  # not inheritable: no other child holds the write end
    subprocess.Popen(
        [sys.executable, "-m", "cli.reaper", str(os.getpid())],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C to the command's process group does not reach it.
        start_new_session=True,
    )
    os.close(read_end)
    # The write end stays open, unused, for the rest of this process's life: the kernel
    # closes it when the process ends, and that end-of-file is the watcher's signal.
    _ = write_end


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat from field 3 (state) on, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    return stat[stat.rindex(b")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every living descendant of ``root``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None:  # field 4: the parent's pid
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found: dict[int, int] = {}
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        started = _start_time(pid)
        if started is not None and pid != os.getpid():
            found[pid] = started
        todo.extend(parents.get(pid, []))
    return found


def _stop(seen: dict[int, int]) -> None:
    """SIGTERM the processes of ``seen`` that are still the same processes, then SIGKILL
    those that have not exited after the grace period."""

    def alive() -> list[int]:
        return [pid for pid, started in seen.items() if _start_time(pid) == started]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def watch(parent: int) -> None:
    """Note ``parent``'s descendants until stdin ends, then stop them."""
    seen: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([0], [], [], POLL_SECONDS)
        if readable and not os.read(0, 1):
            break  # end of file: the parent is gone
        seen.update(descendants(parent))
    _stop(seen)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
