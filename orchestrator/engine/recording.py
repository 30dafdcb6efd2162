"""``orch run --record DIR`` and ``--replay DIR``: agent calls kept on disk and answered from it.

Recording stores every agent call in ``DIR/<key>.json``: the phase, the agent
and its type, the rendered input, and each result in call order (output,
metadata with token usage, a handoff, the streamed pieces, or the error: its one-line
text, its hint and what the failed call used, so a replayed failure is the live one). The
key is a hash of the agent type and the rendered input (the agent's ``with``
merged with the phase's). Everything written is masked first: a secret's value
never reaches DIR, and as the key is computed on the masked input a replay
matches without the secret. Replaying answers each call from DIR without calling
the agent (its stream pieces are streamed again); a call that was not recorded
fails its phase, naming the phase and what differs from what was recorded. The
folder is read and checked when the replay starts: a file that is not JSON or
not shaped as ``--record`` writes it is a UsageError naming the file, before
anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents.base import AgentFailure, AgentResult
from ..errors import OrchError, UsageError
from ..events import SecretMasker
from ..files import folder_problem
from ..jsontext import dumps
from ..spec.schema import describe
from .call import describe as one_line
from .executor import CallChannel, CallSpec
from .result import json_data

if TYPE_CHECKING:
    from .call import CallNext

__all__ = ["CallLog"]

StreamFn = Callable[[str], Awaitable[None]]
_FORMAT = 1


class CallLog:
    """The agent calls of runs in one folder: recorded (``replay=False``) or replayed.

    An instance is a call middleware (``RunOptions.call_middleware``): every agent
    call of the run, its sub-runs, handlers and compensations goes through it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, replay: bool) -> None:
        self.folder = Path(folder)
        self.replay = replay
        # recording: no call may be answered from the result cache, or it is missing here
        self.needs_every_call = not replay
        self._served: dict[str, int] = {}  # replay: calls answered so far, per key
        self._calls: dict[str, dict[str, Any]] = {}  # record: what each key's file holds
        self._maskers: dict[tuple[tuple[str, ...], SecretMasker | None], SecretMasker] = {}
        if replay:
            self._calls = _load(self.folder)  # replay: every recording, checked now
        else:
            _check_folder("--record", self.folder, _RECORD_HINT)
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"--record {self.folder}: cannot create the folder:"
                    f" {(exc.strerror or str(exc)).lower()}"
                ) from exc
            if not os.access(self.folder, os.W_OK):
                raise UsageError(f"--record {self.folder}: the folder is not writable")

    async def __call__(self, spec: CallSpec, channel: CallChannel, call_next: CallNext) -> Any:
        """The call middleware: answer from the folder (replay), or call and store (record)."""
        masker = self._masker(spec.secrets, channel.masker)
        shown = masker.mask(dict(spec.input)) if masker else dict(spec.input)
        key = _key(spec.agent_type, shown)
        if self.replay:
            return await self._replay(spec, shown, key, channel.stream)
        pieces: list[str] = []
        stream = channel.stream

        async def tee(text: str) -> None:
            pieces.append(text)
            await stream(text)

        teed = CallChannel(tee, channel.run_workflow, channel.agent, channel.masker)
        entry: dict[str, Any] = {"stream": pieces}
        try:
            result = await call_next(spec, teed)
        except Exception as exc:
            entry.update(_failure(exc))
            self._store(spec, masker, shown, key, entry)
            raise
        if isinstance(result, AgentResult):
            entry.update(output=result.output, metadata=result.metadata, handoff=result.handoff)
        else:
            entry.update(output=result, metadata={}, handoff=None)
        self._store(spec, masker, shown, key, entry)
        return result

    def _masker(self, secrets: Mapping[str, str], run: SecretMasker | None) -> SecretMasker:
        """Masks every secret of the run, a replay's stand-ins for unset ones included, so
        that keys match whatever the secret's value (or absence) when replaying; and what
        the run's masker masks (``run``: a sub-run's masks its caller's secrets too)."""
        key = (tuple(sorted(secrets.values())), run)
        found = self._maskers.get(key)
        if found is None:
            found = self._maskers[key] = SecretMasker(secrets.values(), also=run)
        return found

    def _store(
        self,
        spec: CallSpec,
        masker: SecretMasker,
        shown: Mapping[str, Any],
        key: str,
        entry: dict[str, Any],
    ) -> None:
        record = self._calls.get(key)
        if record is None:
            record = self._calls[key] = {
                "format": _FORMAT,
                "phase": spec.phase_id,
                "agent": spec.agent_name,
                "agent_type": spec.agent_type,
                "input": shown,
                "calls": [],
            }
        record["calls"].append(masker.mask(entry) if masker else entry)
        _write_json(self.folder / f"{key}.json", record)

    async def _replay(
        self, spec: CallSpec, shown: Mapping[str, Any], key: str, stream: StreamFn
    ) -> AgentResult:
        record = self._calls.get(key)
        if record is None:
            raise AgentFailure(
                self._unseen(spec.phase_id, spec.agent_name, spec.agent_type, shown),
                transient=False,
            )
        calls = record["calls"]  # checked by _load: a non-empty list of results
        n = self._served.get(key, 0)
        self._served[key] = n + 1
        entry = calls[min(n, len(calls) - 1)]
        for piece in entry.get("stream", ()):
            await stream(piece)
        if "error" in entry:  # older recordings have neither hint nor metadata
            raise AgentFailure(
                entry["error"],
                transient=entry.get("transient", True),
                hint=entry.get("hint"),
                metadata=entry.get("metadata"),
            )
        return AgentResult(
            output=entry["output"],
            metadata=dict(entry.get("metadata") or {}),
            handoff=entry.get("handoff"),
        )

    def _unseen(self, phase: str, agent: str, agent_type: str, shown: Mapping[str, Any]) -> str:
        """Why a call has no recording: the closest recorded call of the phase, and what differs."""
        head = f"--replay {self.folder}: no recorded call matches phase '{phase}' (agent '{agent}')"
        same = [r for _, r in sorted(self._calls.items()) if r["phase"] == phase]
        phases = {r["phase"] for r in self._calls.values()}
        if not same:
            known = ", ".join(sorted(phases)) or "none"
            return f"{head}: the phase made no call when it was recorded (recorded phases: {known})"
        best = min(same, key=lambda r: len(_differences(r, agent_type, shown)))
        diffs = _differences(best, agent_type, shown)
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        return f"{head}: " + "; ".join(diffs[:3]) + more


def _failure(exc: Exception) -> dict[str, Any]:
    """What a failed call stores: the error as the phase shows it (one line, call.describe),
    whether the phase's policy may retry it, and its hint and usage when it has them."""
    entry: dict[str, Any] = {"error": one_line(exc)}
    if isinstance(exc, AgentFailure):
        entry["transient"] = exc.transient
        if exc.metadata:
            entry["metadata"] = json_data(exc.metadata)
    else:  # another orch error (configuration, expression) is never retried
        entry["transient"] = not isinstance(exc, OrchError)
    if isinstance(exc, OrchError) and exc.hint:
        entry["hint"] = exc.hint
    return entry


_RECORD_HINT = "--record names a folder (a new one, or one --record made) to store the calls in"


def _check_folder(option: str, folder: Path, hint: str) -> None:
    """Raise UsageError when ``folder`` cannot be a folder of calls (``folder_problem``:
    a file, a file on its path, it or a folder above it this user cannot open)."""
    problem = folder_problem(folder)
    if problem is not None:
        raise UsageError(f"{option} {folder}: {problem}", hint=hint)


def _load(folder: Path) -> dict[str, dict[str, Any]]:
    """The recordings of a ``--replay`` folder by key (the file name without ``.json``).

    Raises UsageError (exit 2, before the run) for a folder that is missing or a file,
    and for any ``*.json`` file in it that cannot be read or is not a recording
    (``_problem``): a broken file is never skipped nor replayed as a null output.
    """
    hint = "record the calls with `orch run FILE --record DIR` and replay DIR"
    _check_folder("--replay", folder, hint)
    if not folder.is_dir():
        raise UsageError(f"--replay {folder}: no such folder", hint=hint)
    found: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            bad.append(f"{path}: cannot be read: {(exc.strerror or str(exc)).lower()}")
            continue
        except ValueError as exc:  # not UTF-8, or not JSON
            bad.append(f"{path}: not JSON ({exc})")
            continue
        problem = _problem(data)
        if problem is not None:
            bad.append(f"{path}: {problem}")
        else:
            found[path.stem] = data
    if bad:
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UsageError(
            f"--replay {folder}: "
            + (
                "a file is not a recording"
                if len(bad) == 1
                else f"{len(bad)} files are not recordings"
            )
            + " made by --record: "
            + "; ".join(bad[:3])
            + more,
            hint="remove or fix it, or record the calls again with `orch run FILE --record DIR`",
        )
    return found


def _problem(data: Any) -> str | None:
    """What is wrong with one recording file's JSON (None: it is as ``_store`` writes it)."""
    if not isinstance(data, dict):
        return f"it holds {describe(data)}, not a mapping of phase, agent, input and calls"
    if data.get("format") != _FORMAT:
        if "format" not in data:
            return "'format' is missing"
        return f"format {describe(data['format'])} is not the one this orch reads ({_FORMAT})"
    for key in ("phase", "agent", "agent_type"):
        if not isinstance(data.get(key), str):
            return _wrong(data, key, "a string")
    if not isinstance(data.get("input"), dict):
        return _wrong(data, "input", "a mapping")
    calls = data.get("calls")
    if calls == []:
        return "'calls' is empty: a recording holds at least one result"
    if not isinstance(calls, list):
        return _wrong(data, "calls", "a list of results")
    for n, entry in enumerate(calls):
        problem = _entry_problem(entry)
        if problem is not None:
            return f"calls[{n}]: {problem}"
    return None


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one recorded result (None: it is an output or an error)."""
    if not isinstance(entry, dict):
        return f"{describe(entry)} is not a result (a mapping with 'output' or 'error')"
    if "error" in entry:
        if not isinstance(entry["error"], str):
            return _wrong(entry, "error", "a string")
        if not isinstance(entry.get("transient", True), bool):
            return _wrong(entry, "transient", "true or false")
        if not isinstance(entry.get("hint"), (str, type(None))):
            return _wrong(entry, "hint", "a string or null")
    elif "output" not in entry:
        return "it has neither 'output' nor 'error'"
    stream = entry.get("stream", [])
    if not isinstance(stream, list) or not all(isinstance(p, str) for p in stream):
        return "'stream' must be a list of strings"
    if not isinstance(entry.get("metadata", {}), dict):
        return _wrong(entry, "metadata", "a mapping")
    if not isinstance(entry.get("handoff"), (str, type(None))):
        return _wrong(entry, "handoff", "a string or null")
    return None


def _wrong(data: Mapping[str, Any], key: str, want: str) -> str:
    if key not in data:
        return f"'{key}' is missing"
    return f"'{key}' must be {want}, not {describe(data[key])}"


def _key(agent_type: str, shown: Mapping[str, Any]) -> str:
    text = json.dumps(
        {"agent_type": agent_type, "input": shown},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _differences(record: Mapping[str, Any], agent_type: str, shown: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if record.get("agent_type") != agent_type:
        out.append(f"agent type: recorded '{record.get('agent_type')}', now '{agent_type}'")
    # the recorded input went through JSON: compare with the current one as JSON too
    now = json.loads(json.dumps(dict(shown), default=str))
    _diff(record.get("input"), now, "input", out)
    return out


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            where = f"{path}.{k}"
            if k not in new:
                out.append(f"{where}: recorded {_clip(old[k])}, now absent")
            elif k not in old:
                out.append(f"{where}: not recorded, now {_clip(new[k])}")
            else:
                _diff(old[k], new[k], where, out)
    elif old != new:
        out.append(f"{path}: recorded {_clip(old)}, now {_clip(new)}")


def _clip(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(data, indent=1, what="the recording"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
