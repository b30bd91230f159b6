"""Who owns a spool's files: one lock file per living process, ``owners/<token>.lock``.

A process holds an exclusive ``flock`` on its own lock file for as long as it lives (the
kernel lets go of it when the process dies, SIGKILL included). Whoever can take a token's
lock knows that owner is gone. Where ``fcntl`` is missing (Windows), every owner is taken to
be alive: nothing is ever taken over there.
"""

from __future__ import annotations

import contextlib
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEAD = -1  # take_if_dead: the owner is gone and had no lock file left at all


def lock_path(folder: str, token: str) -> str:
    return os.path.join(folder, "owners", token + ".lock")


def hold(folder: str, token: str) -> int:
    """Make and lock our lock file; it is locked before it is in owners/ (made under tmp/,
    renamed), so nobody ever sees it unheld. Returns its descriptor (keep it open)."""
    making = os.path.join(folder, "tmp", token + ".lock")
    fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, lock_path(folder, token))
    except OSError:
        os.close(fd)
        raise
    return fd


def release(folder: str, token: str, fd: int | None, unlink: bool = True) -> None:
    """Let go of a lock (ours at close, or a dead owner's after taking its files)."""
    if unlink:
        with contextlib.suppress(OSError):
            os.unlink(lock_path(folder, token))
    if fd is not None and fd != DEAD:
        with contextlib.suppress(OSError):
            os.close(fd)


def take_if_dead(folder: str, token: str) -> int | None:
    """None while the owner of ``token`` lives; else its lock, now ours (a descriptor, or
    DEAD when no lock file is left): hold it while taking the owner's files, then
    ``release`` it."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_path(folder, token), os.O_RDWR)
    except FileNotFoundError:
        return DEAD
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def owner_alive(folder: str, token: str) -> bool:
    """Whether the process of ``token`` lives (asked without keeping its lock)."""
    fd = take_if_dead(folder, token)
    if fd is None:
        return True
    release(folder, token, fd, unlink=False)
    return False
