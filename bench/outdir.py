"""One writer per output folder, temp folders that outlive nobody, and SIGTERM handled like Ctrl-C.

Why: two ``bench matrix`` runs on one ``--out`` both rewrote results.json after every cell (the file flipped
between their run ids and one run's cells were lost), and a ``kill -9`` left its ``bench-matrix-*`` temp
folder behind for good. The lock is a ``flock`` on ``DIR/.bench.lock``: the kernel drops it when its holder
dies, however it dies, so a lock file left by a killed run is stale by construction (taken over, said so);
the file also names the holder (PID, host, command, start) for the second run's one-line refusal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import InputError

LOCK_NAME = ".bench.lock"
OWNER_NAME = ".owner"  # inside a bench temp folder: flocked by the process that uses it
TEMP_PREFIXES = ("bench-matrix-",)
UNOWNED_STALE_S = 24 * 3600.0  # a temp folder from a bench without owner files: stale after a day

LogFn = Callable[[str], None]


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another bench run (it has not written its details yet)"
    since = f" since {info['started']}" if info.get("started") else ""
    return f"`{info.get('command', 'bench')}` (PID {info.get('pid', '?')} on host {info.get('host', '?')}{since})"


def _read_info(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    return {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock_output(out: Path, command: str = "bench matrix", log: LogFn | None = None) -> Iterator[Path]:
    """Hold ``out``'s lock for the block; InputError (exit 2) naming the holder when another run has it."""
    say = log or (lambda _m: None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    path = out / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _holder_text(_read_info(fd))
            os.close(fd)
            raise InputError(
                f"output folder {out} is in use by {holder}: wait for it to end, or give another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file its last holder unlinked meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    old = _read_info(fd)
    if old and (old.get("pid"), old.get("host")) != (os.getpid(), socket.gethostname()):
        dead = "not running" if old.get("host") == socket.gethostname() and not _alive(old.get("pid")) else "gone"
        say(f"note: {out} had a stale lock from {_holder_text(old)} ({dead}); taken over")
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(info).encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError as exc:
        os.close(fd)
        if exc.errno in NO_SPACE:
            raise no_space_error(out, len(text)) from None
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the flock


# --- paths in reports ----------------------------------------------------------------------------------


def shown_path(path: str | Path | None, cwd: Path | None = None) -> str | None:
    """A path as a report shows it: relative to the working folder when inside it, else only its last part
    (``…/demo``), so a committed report does not print the layout of the machine it was made on (the
    service's ``--expose-paths`` rule)."""
    if path is None or str(path) == "":
        return None
    p = Path(str(path))
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to((cwd or Path.cwd()).resolve())) or "."
    except ValueError:
        return f"…/{p.name}" if p.name else str(p)


# --- disk full -------------------------------------------------------------------------------------------

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_error(folder: Path, needed_bytes: int) -> InputError:
    """Disk full (or over quota) is the user's to fix, not a bench bug: exit 2 naming the folder and the space."""
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    return InputError(
        f"no space left in {folder}: writing needs {needed_bytes:,} bytes ({free}); free some space there "
        "or write to another folder (--out); files already written are kept"
    )


# --- temp folders -------------------------------------------------------------------------------------


def owned_tempdir(prefix: str = "bench-matrix-") -> tuple[Path, int]:
    """A new temp folder with a flocked owner file inside: (folder, the fd to keep open while it is in use)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(folder / OWNER_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode("utf-8"), 0)
    return folder, fd


def sweep_stale_temp(root: Path | None = None, log: LogFn | None = None, now: float | None = None) -> list[Path]:
    """Remove ``bench-matrix-*`` temp folders whose owner is gone (a ``kill -9``, a power cut); the removed ones."""
    say = log or (lambda _m: None)
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    moment = time.time() if now is None else now
    for prefix in TEMP_PREFIXES:
        for folder in sorted(base.glob(f"{prefix}*")):
            if folder.is_symlink() or not folder.is_dir():
                continue
            if _stale(folder, moment):
                shutil.rmtree(folder, ignore_errors=True)
                if not folder.exists():
                    removed.append(folder)
    if removed:
        say(f"removed {len(removed)} stale temp folder(s) left by killed bench runs: {', '.join(map(str, removed))}")
    return removed


def _stale(folder: Path, now: float) -> bool:
    owner = folder / OWNER_NAME
    if not owner.is_file():
        with contextlib.suppress(OSError):
            return now - folder.stat().st_mtime > UNOWNED_STALE_S
        return False
    try:
        fd = os.open(owner, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False  # its owner holds it: in use
    finally:
        os.close(fd)  # closing also drops the shared lock taken just now
    return True


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a cell's child (Linux; None elsewhere): SIGKILL it when its parent dies, even by
    ``kill -9``, rather than leave it measuring alone for up to its cell timeout and writing into a temp folder
    already swept. libc is looked up here, in the parent: the child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(1, kill)  # 1 = PR_SET_PDEATHSIG

    return preexec


# --- SIGTERM like Ctrl-C --------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into the Ctrl-C path: finished work is kept, the child cell is stopped, temp removed."""


@dataclass
class Signals:
    """Which signal stopped the block: Ctrl-C (SIGINT, exit 130) unless SIGTERM arrived (exit 143 = 128 + 15)."""

    terminated: bool = False

    @property
    def name(self) -> str:
        return "SIGTERM" if self.terminated else "Ctrl-C"

    @property
    def exit_code(self) -> int:
        return 143 if self.terminated else 130


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[Signals]:
    """While the block runs (main thread only), SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) as
    Ctrl-C does, so ``kill PID`` (systemd, a CI runner's cancel, ``timeout``) ends as cleanly."""
    state = Signals()
    if sys.platform == "win32" or not _main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        state.terminated = True
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
