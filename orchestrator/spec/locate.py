"""Where a workflow named on the command line lives: a file path, or a NAME in the workflows path.

``orch run demo`` finds ``demo.yaml`` (or ``demo.yml``) in the folders of
``$ORCH_WORKFLOWS`` (several separated by ``os.pathsep``), default ``./workflows``.
A name is a plain file name (letters, digits, ``_``, ``-``, ``.``): it never
reaches outside those folders.

One rule for `orch run`, `orch graph` and `orch validate` (``find_workflow``): an
existing file wins; for `orch validate` an existing folder is a folder (its
``*.yaml``); otherwise a plain name is looked up in the workflows path (so a
folder ``demo/`` next to ``workflows/demo.yaml`` does not hide it from `orch run
demo`); a name found nowhere is an error listing the workflows there.

A path this user cannot look at (a folder on the way without search permission) is
returned as it is, so that reading it says ``cannot read '...': Permission denied``
(exit 2) as for an unreadable file. A folder of the workflows path that cannot be
searched is an error naming it, not skipped: an earlier folder may hold the NAME the
user means, and running a later one instead, or saying it is nowhere, would be wrong.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import Location, Problem, UsageError

__all__ = [
    "DEFAULT_WORKFLOWS_PATH",
    "expand_paths",
    "find_workflow",
    "workflow_names",
    "workflows_path",
]

DEFAULT_WORKFLOWS_PATH = "workflows"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SUFFIXES = (".yaml", ".yml")


def workflows_path(value: str | None = None) -> list[Path]:
    """The folders searched for workflow names: ``value``, ``$ORCH_WORKFLOWS`` or ./workflows."""
    text = value if value is not None else os.environ.get("ORCH_WORKFLOWS", "")
    folders = [Path(p) for p in text.split(os.pathsep) if p.strip()]
    return folders or [Path(DEFAULT_WORKFLOWS_PATH)]


def workflow_names(search: list[Path] | None = None) -> list[str]:
    """The names ``orch run NAME`` accepts: the workflow files in the workflows path, sorted."""
    folders = search if search is not None else workflows_path()
    names: set[str] = set()
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:  # missing, not a folder, unreadable: nothing to offer
            continue
        names.update(p.stem for p in entries if p.suffix in _SUFFIXES and _NAME.fullmatch(p.stem))
    return sorted(names)


def find_workflow(
    ref: str | os.PathLike[str], *, search: list[Path] | None = None, folders: bool = False
) -> Path:
    """The file ``ref`` names (the module's rule): an existing file as it is; with
    ``folders`` (`orch validate`) an existing folder as it is; else ``NAME.yaml`` in the
    workflows path.

    A ``ref`` that is not a plain name (it has a folder or a .yaml suffix) is returned
    unchanged, so that reading it reports a missing file where it is; so is an existing
    folder that is no name in the workflows path (reading it says it is a folder). Raises
    UsageError (exit 2) for a name found nowhere, listing the folders searched and the
    names there, for an empty ``ref`` (an unset ``$FILE`` in a script), which
    ``Path`` would read as the current folder, and for ``-`` (standard input: only
    `orch validate` reads it, in ``expand_paths``) unless a file is called so.
    """
    _not_empty(ref, folders=folders)
    path = Path(ref)
    text = str(ref)
    try:
        exists = path.exists()
        is_dir = exists and path.is_dir()
    except OSError:  # a folder on the way cannot be searched: reading it says so
        return path
    if exists and (folders or not is_dir):
        return path
    if text == "-":  # `orch validate` reads standard input itself (expand_paths)
        raise UsageError(
            "only `orch validate` reads a workflow from standard input ('-'): a run is"
            " recorded with its workflow file, which `orch resume` reads again",
            hint="save the workflow to a file and give its path",
        )
    if not _NAME.fullmatch(text) or path.suffix in _SUFFIXES:
        return path
    search = search if search is not None else workflows_path()
    for folder in search:
        for suffix in _SUFFIXES:
            candidate = folder / f"{text}{suffix}"
            if _is_file_in(folder, candidate):
                return candidate
    if exists:  # a folder: `orch run` says it is no workflow file
        return path
    known = workflow_names(search)
    where = ", ".join(f"'{f}'" for f in search)
    message = f"no workflow file '{text}', and no '{text}.yaml' in the workflows path ({where})"
    close = difflib.get_close_matches(text, known, n=1)
    if close:
        message += f"; did you mean '{close[0]}'?"
    if known:
        hint = "workflows there: " + ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    else:
        hint = "give the file's path, or set ORCH_WORKFLOWS to the folder that holds NAME.yaml"
    raise UsageError(message, hint=hint)


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False when it cannot be looked at (reading it says why)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_file_in(folder: Path, candidate: Path) -> bool:
    """Whether ``candidate`` is a file; UsageError when ``folder`` cannot be searched."""
    try:
        return stat.S_ISREG(candidate.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise UsageError(
            f"cannot search the workflows folder '{folder}' for '{candidate.name}':"
            f" {exc.strerror or exc}",
            hint=f"let this user search it (chmod a+rx '{folder}'),"
            " or leave it out of ORCH_WORKFLOWS",
        ) from exc


def _not_empty(ref: str | os.PathLike[str], *, folders: bool) -> None:
    if isinstance(ref, str) and not ref:
        raise UsageError(
            "an empty path names no workflow file (an unset variable in a script?)",
            hint="give a file, a folder, a NAME or - (standard input); for this folder give ."
            if folders
            else "give the workflow file's path or a NAME",
        )


def expand_paths(paths: Sequence[str]) -> tuple[list[Path], list[Problem]]:
    """The files to check for ``paths`` (`orch validate`): each found by ``find_workflow``
    (a NAME in the workflows path too); a folder stands for its ``*.yaml`` and ``*.yml``
    files (sorted, not recursive); files and ``-`` (standard input) stay; each file once.

    A folder without such files, or a name found nowhere, is a Problem (a mistyped
    folder must not pass silently); so is a ``*.yaml`` entry of a folder that is a
    dangling symbolic link (it is checked, and reading it says so). Raises UsageError
    for an empty path (an unset ``$FILE`` in a script), which would mean the current
    folder.
    """
    for given in paths:
        _not_empty(given, folders=True)  # before anything is checked
    files: list[Path] = []
    problems: list[Problem] = []
    for given in paths:
        if given == "-":
            files.append(Path(given))
            continue
        try:
            path = find_workflow(given, folders=True)
        except UsageError as exc:
            problems.append(_unreadable(given, exc.message, exc.hint))
            continue
        if _is_folder(path):
            try:
                found = sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in _SUFFIXES
                    and (p.is_file() or (p.is_symlink() and not p.exists()))
                )
            except OSError as exc:
                message = f"cannot read the folder '{path}': {exc.strerror or exc}"
                hint = "let this user read and search it (chmod a+rx), or name the files"
                problems.append(_unreadable(path, message, hint))
                continue
            if not found:
                message = f"the folder '{path}' holds no .yaml or .yml files"
                hint = "name the workflow files, or the folder that holds them"
                problems.append(_unreadable(path, message, hint))
            files.extend(found)
        else:
            files.append(path)
    return list(dict.fromkeys(files)), problems


def _unreadable(where: str | Path, message: str, hint: str | None) -> Problem:
    """A path given to ``orch validate`` that names no workflow it can read."""
    return Problem(Location(str(where)), message, hint=hint, code="unreadable")
