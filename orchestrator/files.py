"""Files orch writes on a user's word (``--output-file`` and the like): checked, written atomically.

A path named by the user is written only when it is a new path in an existing,
writable folder, or an existing *regular* file. Anything else (a folder, a
symlink, a device such as ``/dev/null``, a FIFO, a socket) is refused with a
UsageError (exit 2) and left untouched: the file is written to a temporary
file beside it and renamed over the path itself, never over what a link
points to. Stdlib only.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import UsageError

__all__ = ["blocked_path", "check_output_path", "folder_problem", "write_output_atomic"]


def blocked_path(path: Path) -> str | None:
    """Why ``path`` cannot be reached (or made) through the folders above it, or None.

    ``'X' is a file, not a folder`` for the first part of the path that is a file, or
    ``this user cannot open the folder 'X' (permission denied)`` for the first folder
    this user cannot search. A missing part is no block (it can be created); what
    ``path`` itself is, is the caller's to judge.
    """
    parts = path.parts
    for i in range(1, len(parts) + 1):
        prefix = Path(*parts[:i])
        try:
            mode = os.stat(prefix).st_mode
        except FileNotFoundError:
            return None
        except NotADirectoryError:  # a link through a file: the loop found no file before
            return f"'{prefix}' is not reachable: a part of it is a file, not a folder"
        except PermissionError:
            above = Path(*parts[: i - 1]) if i > 1 else Path.cwd()
            return f"this user cannot open the folder '{above}' (permission denied)"
        except OSError as exc:
            return f"'{prefix}' cannot be reached: {(exc.strerror or str(exc)).lower()}"
        if i < len(parts) and not stat.S_ISDIR(mode):
            return f"'{prefix}' is a file, not a folder"
    return None


def folder_problem(path: Path, *, must_exist: bool = False, listed: bool = False) -> str | None:
    """Why ``path`` cannot be used as a folder this user opens, or None.

    In order: a folder above it blocked (``blocked_path``), ``path`` a file (or any
    other thing than a folder), ``path`` a folder this user cannot open (or, with
    ``listed``, cannot list), and with ``must_exist``, ``path`` missing. The one
    folder check of the state folder, the ``--record``/``--replay`` folders and the
    workflows folder of ``orch serve``; each caller adds its own headline and hint.
    """
    blocked = blocked_path(path)
    if blocked is not None:
        return blocked
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"'{path}' does not exist" if must_exist else None
    except OSError as exc:  # pragma: no cover - blocked_path saw it reachable just now
        return f"'{path}' cannot be reached: {(exc.strerror or str(exc)).lower()}"
    if not stat.S_ISDIR(mode):
        return f"'{path}' is a file, not a folder"
    if not os.access(path, (os.R_OK | os.X_OK) if listed else os.X_OK):
        return f"this user cannot open the folder '{path}' (permission denied)"
    return None


def check_output_path(path: Path, option: str, *, example: str = "outputs.json") -> None:
    """Raise UsageError unless ``path`` can be written as a new or regular file.

    ``option`` names the flag in the message (``--output-file``); ``example`` is the
    file name the hint suggests inside a folder given instead of a file. Refused: a
    folder, a symlink (even one that dangles), a device, FIFO or socket, a
    missing folder or one that is a file, and a folder or file not writable.
    """
    blocked = blocked_path(path)
    if blocked is not None:
        raise UsageError(
            f"{option} '{path}' cannot be written: {blocked}",
            hint="choose a path in a folder you can write to",
        )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{option} '{path}' cannot be used: {exc.strerror or exc}") from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(
            f"{option} '{path}' is a directory, not a file",
            hint=f"name a file inside it, e.g. {option} '{path / example}'",
        )
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(
            f"{option} '{path}' is {_kind(mode)}, not a regular file; orch writes only"
            " new or regular files",
            hint="name a new file, or a regular file to replace",
        )
    folder = path.absolute().parent
    if not folder.exists():
        raise UsageError(
            f"{option} '{path}': the folder '{folder}' does not exist",
            hint="create the folder first, or choose another path",
        )
    writable = os.access(folder, os.W_OK | os.X_OK)
    if not writable or (mode is not None and not os.access(path, os.W_OK)):
        raise UsageError(
            f"{option} '{path}' cannot be written: permission denied",
            hint="choose a path in a folder you can write to",
        )


def write_output_atomic(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` (checked again first): temp file, fsync, rename.

    The rename replaces the path itself (a link that appeared since the check
    is refused, and would be replaced, never followed). Raises UsageError.
    """
    check_output_path(path, option)
    target = path.absolute()
    tmp = ""
    try:
        fd, tmp = _new_file(target)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {option} '{path}': {exc.strerror or exc}") from exc


def _new_file(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target``: (fd, path). Its mode is the one a plain
    ``open`` gives (0666 less the umask: a CI artifact others may read), or the mode of
    the regular file it replaces; never a link followed (``O_EXCL``)."""
    try:
        mode: int | None = stat.S_IMODE(os.lstat(target).st_mode)
    except FileNotFoundError:
        mode = None
    for _ in range(100):
        name = str(target.parent / f".{target.name}.{secrets.token_hex(4)}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            os.chmod(name, mode)
        return fd, name
    raise FileExistsError(f"no free temporary name beside '{target}'")  # pragma: no cover


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"  # pragma: no cover - every other kind is listed above
