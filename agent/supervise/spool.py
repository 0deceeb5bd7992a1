"""A task's console log on disk until the server has acknowledged it.

Per task, in the spool directory:

- ``<task>.jsonl``: one JSON record per file line, ``[seq, ts, level, [line, ...]]``: the
  console lines read together (one pump chunk), appended with one ``write(2)`` (O_APPEND), so
  a crash of the agent loses at most the record being written; an unterminated last file line
  is cut off on the next open. (Spools of earlier versions hold one console line as a string in
  place of the list; they are still read.)
- ``<task>.ack``: the byte offset up to which the server acknowledged (written atomically);
- ``<task>.meta``: ``{"task", "worker"}`` so a later start can deliver what is left.

The ``.jsonl`` file is locked (``flock``) while a shipper has it open, so a starting agent never
re-sends the spool of a task another process is still running. Delivered spools are removed.
A task that runs again while the spool of its previous run is still being delivered (requeued
after its agent died) writes ``<task>.<n>.jsonl`` (and ``.ack``/``.meta``) instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()

SPOOL_SUFFIX = ".jsonl"
ACK_SUFFIX = ".ack"
META_SUFFIX = ".meta"
FILE_MODE = 0o600


class SpoolError(OSError):
    """The spool could not be written (disk full, permissions...): the task cannot keep its
    log safe. The message names the file and the cause."""


class SpoolBusy(SpoolError):
    """Another process holds this task's spool open."""


@dataclass(frozen=True)
class Record:
    seq: int
    ts: float  # seconds since the epoch, when the lines were read
    level: str
    lines: Sequence[str]  # console lines, without their line endings


def _safe_name(task_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id) or "_"


# Built once: json.dumps(..., ensure_ascii=False) would build a new encoder for every line.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def _parse(line: bytes, path: Path) -> Record | None:
    try:
        seq, ts, level, lines = _decode(line.decode("utf-8", errors="replace"))
        if isinstance(lines, str):  # one line per record, the format of older agents
            lines = [lines]
        elif not isinstance(lines, list):
            raise TypeError("lines is not a list")
        else:
            "".join(lines)  # TypeError unless every item is a string: one C loop, no Python one
        return Record(int(seq), float(ts), str(level), lines)
    except (ValueError, TypeError):
        log.warning("corrupt spool record skipped", path=str(path), record=line[:200])
        return None


def spool_name(task_id: str, generation: int = 0) -> str:
    """The file stem of a task's spool: ``<task>``, then ``<task>.<n>`` for later runs."""
    return _safe_name(task_id) + (f".{generation}" if generation else "")


class Spool:
    def __init__(self, directory: Path, task_id: str, name: str | None = None) -> None:
        self.task_id = task_id
        base = directory / (name or spool_name(task_id))
        self.path = base.with_name(base.name + SPOOL_SUFFIX)
        self.ack_path = base.with_name(base.name + ACK_SUFFIX)
        self.meta_path = base.with_name(base.name + META_SUFFIX)
        self._fd: int | None = None
        self.size = 0  # bytes of complete records in the file
        self.acked = 0  # bytes the server has acknowledged
        self._seq = 0

    # --- opening and closing ---------------------------------------------------------
    def open(self, worker: str) -> None:
        """Open (or resume) the spool for appending; SpoolBusy if another process has it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise SpoolError(exc.errno, f"log spool {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise SpoolBusy(
                exc.errno, f"log spool {self.path} is in use by another process"
            ) from exc
        self._fd = fd
        try:
            self._recover()
            if not self.meta_path.exists():
                self._write_atomic(
                    self.meta_path, json.dumps({"task": self.task_id, "worker": worker})
                )
        except OSError as exc:
            self.release()
            raise SpoolError(exc.errno, f"log spool {self.path}: {exc.strerror}") from exc

    def _recover(self) -> None:
        """Resume after a previous run: cut an unterminated tail, find the next seq and ack."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size:
            data = self.path.read_bytes()
            complete = data.rfind(b"\n") + 1
            if complete != size:
                os.ftruncate(self._fd, complete)
                log.warning("spool tail cut", path=str(self.path), lost_bytes=size - complete)
            self.size = complete
            last = next(
                (r for r in map(self._parse_line, reversed(data[:complete].splitlines())) if r),
                None,
            )
            self._seq = last.seq + 1 if last else 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.acked = min(int(self.ack_path.read_text().strip() or 0), self.size)

    def _parse_line(self, line: bytes) -> Record | None:
        return _parse(line, self.path) if line.strip() else None

    def release(self) -> None:
        """Close the file and drop the lock; the files stay for a later delivery."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Everything was delivered: delete the files."""
        for path in (self.ack_path, self.meta_path, self.path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.release()

    # --- records ----------------------------------------------------------------------
    def append(self, ts: float, level: str, lines: Sequence[str]) -> Record:
        """Append one record of ``lines`` (thread-safety is the caller's: LogShipper holds a
        lock)."""
        if self._fd is None:
            raise SpoolError(0, f"log spool {self.path} is not open")
        record = Record(self._seq, ts, level, lines)
        data = (_encode([record.seq, ts, level, list(lines)]) + "\n").encode(
            "utf-8", errors="replace"
        )
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            raise SpoolError(exc.errno, f"log spool {self.path}: {exc.strerror}") from exc
        if written != len(data):  # a short write on a full disk: the record is incomplete
            raise SpoolError(
                errno.ENOSPC,
                f"log spool {self.path}: {os.strerror(errno.ENOSPC)} "
                f"(wrote {written} of {len(data)} bytes)",
            )
        self._seq += 1
        self.size += written
        return record

    def read(self, offset: int, max_bytes: int, max_lines: int) -> tuple[list[Record], int]:
        """Complete records from ``offset``, about ``max_bytes`` of them and about ``max_lines``
        console lines (records are never split: the first one comes whole, however long); and
        the offset after them."""
        end = self.size
        if offset >= end:
            return [], offset
        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read(min(end - offset, max_bytes))
            if b"\n" not in data:  # one record longer than max_bytes
                data += f.readline()
        records: list[Record] = []
        used = lines = 0
        for line in _lines(data):
            if lines >= max_lines:
                break
            used += len(line)
            record = self._parse_line(line)
            if record is not None:
                records.append(record)
                lines += len(record.lines)
        return records, offset + used

    def ack(self, offset: int) -> None:
        """Record that the server has everything before ``offset``."""
        self.acked = offset
        try:
            self._write_atomic(self.ack_path, str(offset))
        except OSError as exc:  # only costs duplicates after a restart: say so, go on
            log.warning("spool ack not saved", path=str(self.ack_path), error=str(exc))

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _lines(data: bytes) -> Iterator[bytes]:
    """The complete (newline-terminated) lines of ``data``, newline included."""
    start = 0
    while (end := data.find(b"\n", start)) != -1:
        yield data[start : end + 1]
        start = end + 1


@dataclass(frozen=True)
class Leftover:
    task_id: str
    worker: str
    name: str  # the file stem: ``Spool(directory, task_id, name)`` opens it


def leftover_spool_files(directory: Path) -> list[Leftover]:
    """Every spool left in ``directory`` by an earlier run (oldest run of a task first)."""
    out = []
    for path in sorted(directory.glob(f"*{SPOOL_SUFFIX}"), key=_run_order):
        meta = path.with_suffix(META_SUFFIX)
        task_id, worker = path.stem, ""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            doc = json.loads(meta.read_text())
            task_id, worker = str(doc["task"]), str(doc.get("worker", ""))
        out.append(Leftover(task_id, worker, path.stem))
    return out


def _run_order(path: Path) -> tuple[str, int]:
    stem, _, generation = path.stem.rpartition(".")
    if stem and generation.isdigit():
        return stem, int(generation)
    return path.stem, 0


def leftover_spools(directory: Path) -> list[tuple[str, str]]:
    """``(task id, worker)`` of every spool left in ``directory`` by an earlier run."""
    return [(left.task_id, left.worker) for left in leftover_spool_files(directory)]
