"""``eventlog dump`` and ``eventlog verify``: look at the bytes (``kafka-dump-log``).

``dump`` walks segment files (and ``.index`` / ``.timeindex`` files) on its own: it
maps each file read-only and decodes batches with ``eventlog._format``, without
opening the log, so it works on a copy, on a log that does not open, and never
changes a byte. A damaged batch is reported and ``dump`` goes on: a batch whose
checksum holds but whose payload is malformed is skipped by its length; after a
header or checksum failure the length cannot be trusted, so ``dump`` searches for the
next position holding a whole batch with a valid checksum and says how many bytes it
skipped. The zero bytes after the last batch are unwritten (preallocated) space.

``verify`` opens the log read-only and runs ``Log.check`` over every segment, index
and offsets file, with a progress bar on stderr when stderr is a terminal;
``verify --repair`` opens it writable and repairs (``Log.check(fix=True)``).
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import _format
from ..errors import CorruptRecordError
from ._common import EXIT_PROBLEMS, opened_log
from ._output import (
    FORMATS,
    Decoder,
    Progress,
    human_bytes,
    iso_ms,
    show,
    show_headers,
    table,
    write_json,
)

AddParser = Callable[..., argparse.ArgumentParser]

_INDEX_HEADER = struct.Struct("<8sq")
_INDEX_KINDS = {".index": (b"EvLgIDX1", struct.Struct("<II")),
                ".timeindex": (b"EvLgTIX1", struct.Struct("<qI"))}


def register(add: AddParser) -> None:
    dump = add("dump", help="show the batches and records of segment files (read-only)",
               description="Show the batches (and with --records the records) of segment "
                           "files, or the entries of .index and .timeindex files. A "
                           "directory stands for its segment files. Reads the files "
                           "only; the log need not open. Exit code 3 when a damaged "
                           "batch was found.", log=False)
    dump.add_argument("paths", nargs="+", metavar="FILE",
                      help="a segment file (NNNN.log), an index file, or a partition "
                           "directory")
    dump.add_argument("--records", "-r", action="store_true",
                      help="also show every record of every batch")
    dump.add_argument("--value-format", choices=FORMATS, default="msgpack",
                      help="how values were stored (default: msgpack)")
    dump.add_argument("--key-format", choices=FORMATS, default="msgpack",
                      help="how keys were stored, whatever --value-format is (default: "
                           "msgpack)")
    dump.set_defaults(func=dump_files)

    verify = add("verify", help="check the checksums and structure of a whole log",
                 description="Check every batch (checksum, structure, offsets), every "
                             "index and every group's offsets file. Exit code 3 when a "
                             "problem remains.")
    verify.add_argument("--repair", "--fix", action="store_true", dest="fix",
                        help="also repair: rebuild indexes, finish interrupted "
                             "compactions, rewrite damaged offsets files, and cut each "
                             "damaged partition before its first bad batch (the cut bytes "
                             "are kept in *.cut-* files; the report names the offsets "
                             "lost). Without it, verify opens the log read-only")
    verify.set_defaults(func=verify_log)


# -- dump --------------------------------------------------------------------------------

def _expand(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(".log"))
            if not names:
                raise FileNotFoundError(2, "no segment files (*.log) in this directory",
                                        path)
            yield from (os.path.join(path, n) for n in names)
        else:
            yield path


def _read_only_map(path: str) -> tuple[Any, int]:
    """The file's bytes (mapped read-only) and its size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b"", 0
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size


def _next_valid(buf: Any, start: int, limit: int) -> int | None:
    """The first position at or after ``start`` that holds a whole batch whose header
    and checksum hold. Cost: O(bytes searched)."""
    while True:
        found: int = buf.find(_format.MAGIC, start, limit)
        if found < 0:
            return None
        try:
            _format.read_batch_header(buf, found, limit)
            return found
        except CorruptRecordError:
            start = found + 1


def _attributes(attributes: int) -> list[str]:
    names = ["log_append_time" if attributes & _format.ATTR_LOG_APPEND_TIME
             else "create_time"]
    if attributes & _format.ATTR_SPARSE:
        names.append("sparse")
    if attributes & _format.ATTR_TRANSACTIONAL:
        names.append("transactional")
    if attributes & _format.ATTR_CONTROL:   # a marker: which one
        names.append("control:commit" if attributes & _format.ATTR_COMMIT
                     else "control:abort")
    return names


class _Dump:
    """Writes what ``dump`` finds, as text or JSON lines, and counts it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)
        self.records = bool(args.records)
        self.value = Decoder(args.value_format, "value", sys.stderr)
        self.key = Decoder(args.key_format, "key", sys.stderr)
        self.out = sys.stdout
        self.damaged = 0

    def header(self, path: str, pos: int, h: _format.BatchHeader, valid: bool,
               batch: _format.DecodedBatch | None) -> None:
        doc: dict[str, Any] = {
            "type": "batch", "file": path, "position": pos, "base_offset": h.base_offset,
            "last_offset": h.base_offset + h.last_offset_delta, "count": h.record_count,
            "length": h.length, "first_timestamp_ms": h.first_timestamp_ms,
            "max_timestamp_ms": h.max_timestamp_ms, "producer_id": h.producer_id,
            "producer_epoch": h.producer_epoch, "base_sequence": h.base_sequence,
            "attributes": _attributes(h.attributes), "checksum": f"{h.checksum:#018x}",
            "valid": valid}
        records = list(self._records(path, batch)) if batch is not None and self.records \
            else []
        if self.json:
            if self.records and batch is not None:
                doc["records"] = records
            write_json(doc, self.out)
            return
        self.out.write(
            f"position: {pos} base_offset: {doc['base_offset']} last_offset: "
            f"{doc['last_offset']} count: {h.record_count} length: {h.length} "
            f"first_timestamp: {iso_ms(h.first_timestamp_ms)} max_timestamp: "
            f"{iso_ms(h.max_timestamp_ms)} producer_id: {h.producer_id} producer_epoch: "
            f"{h.producer_epoch} base_sequence: {h.base_sequence} attributes: "
            f"{','.join(doc['attributes'])} checksum: {doc['checksum']} valid: "
            f"{'yes' if valid else 'no'}\n")
        for r in records:
            self.out.write(f"| offset: {r['offset']} timestamp: {iso_ms(r['timestamp_ms'])} "
                           f"key: {show(r['key'])} value: {show(r['value'])} headers: "
                           f"{show_headers(r['headers']) or '-'}\n")

    def _records(self, path: str, batch: _format.DecodedBatch) -> Iterator[dict[str, Any]]:
        name = os.path.basename(path)
        for offset, ts, key, value, headers in zip(
                batch.offsets(), batch.timestamps(), batch.key_column(), batch.values,
                batch.header_column(), strict=True):
            yield {"offset": offset, "timestamp_ms": ts,
                   "key": self.key(key, name, -1, offset),
                   "value": self.value(value, name, -1, offset), "headers": headers}

    def damage(self, path: str, pos: int, error: str, resumed: int | None,
               limit: int) -> None:
        self.damaged += 1
        skipped = (resumed if resumed is not None else limit) - pos
        if self.json:
            write_json({"type": "damage", "file": path, "position": pos, "error": error,
                        "skipped_bytes": skipped, "resumed_at": resumed}, self.out)
            return
        after = f"skipped {skipped} bytes to the next valid batch at position {resumed}" \
            if resumed is not None else "no valid batch follows"
        self.out.write(f"DAMAGED at position {pos}: {error}; {after}\n")

    def summary(self, path: str, size: int, batches: int, records: int, damaged: int,
                data_end: int) -> None:
        if self.json:
            write_json({"type": "summary", "file": path, "size_bytes": size,
                        "batches": batches, "records": records, "damaged": damaged,
                        "data_end": data_end}, self.out)
            return
        state = f"{damaged} damaged region{'s' if damaged != 1 else ''}" if damaged \
            else "no damage"
        self.out.write(f"summary: {batches} batches, {records} records, {state}; data "
                       f"ends at position {data_end} of {size} bytes\n")

    def segment(self, path: str) -> None:
        buf, size = _read_only_map(path)
        if not self.json:
            self.out.write(f"segment {path}: {size} bytes\n")
        damaged_before = self.damaged
        batches = records = 0
        pos = 0
        try:
            while pos < size:
                if _format.is_unwritten(buf, pos, size):
                    resumed = _next_valid(buf, pos, size)
                    if resumed is None:
                        break  # the unwritten rest of the file
                    self.damage(path, pos, "zero bytes where a batch should start",
                                resumed, size)
                    pos = resumed
                    continue
                try:
                    header = _format.read_header(buf, pos, size)
                except CorruptRecordError as exc:
                    resumed = _next_valid(buf, pos + 1, size)
                    self.damage(path, pos, str(exc), resumed, size)
                    if resumed is None:
                        pos = size
                        break
                    pos = resumed
                    continue
                try:
                    _format.verify_checksum(buf, pos, header)
                except CorruptRecordError as exc:
                    self.header(path, pos, header, False, None)
                    resumed = _next_valid(buf, pos + 1, size)
                    self.damage(path, pos, str(exc), resumed, size)
                    if resumed is None:
                        pos = size
                        break
                    pos = resumed
                    continue
                try:
                    batch = _format.decode_batch(buf, pos, size, verify=False)
                except CorruptRecordError as exc:
                    # The checksum holds, so the length can be trusted: skip the batch.
                    self.header(path, pos, header, False, None)
                    self.damage(path, pos, str(exc), pos + header.length, size)
                    pos += header.length
                    continue
                self.header(path, pos, header, True, batch)
                batches += 1
                records += header.record_count
                pos += header.length
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
        self.summary(path, size, batches, records, self.damaged - damaged_before, pos)

    def index(self, path: str, suffix: str) -> None:
        magic, entry = _INDEX_KINDS[suffix]
        with open(path, "rb") as f:
            data = f.read()
        if not self.json:
            self.out.write(f"index {path}: {len(data)} bytes\n")
        if len(data) < _INDEX_HEADER.size or data[:8] != magic:
            self.damage(path, 0, f"not a {suffix} file (bad header)", None, len(data))
            return
        _, base = _INDEX_HEADER.unpack_from(data, 0)
        body = len(data) - _INDEX_HEADER.size
        whole = body - body % entry.size
        count = 0
        for a, b in entry.iter_unpack(data[_INDEX_HEADER.size:_INDEX_HEADER.size + whole]):
            count += 1
            if suffix == ".index":
                doc = {"type": "index", "file": path, "offset": base + a, "position": b}
                text = f"offset: {base + a} position: {b}"
            else:
                doc = {"type": "timeindex", "file": path, "timestamp_ms": a,
                       "offset": base + b}
                text = f"timestamp: {iso_ms(a)} ({a}) offset: {base + b}"
            if self.json:
                write_json(doc, self.out)
            else:
                self.out.write(text + "\n")
        damaged = whole != body
        if damaged:
            self.damage(path, _INDEX_HEADER.size + whole,
                        f"{body - whole} bytes of a partial entry", None, len(data))
        if self.json:
            write_json({"type": "summary", "file": path, "size_bytes": len(data),
                        "base_offset": base, "entries": count, "damaged": int(damaged)},
                       self.out)
        else:
            self.out.write(f"summary: base offset {base}, {count} entries\n")


def dump_files(args: argparse.Namespace) -> int:
    """``dump``: every file named, in order; exit code 3 if anything was damaged."""
    dump = _Dump(args)
    for path in _expand(args.paths):
        suffix = os.path.splitext(path)[1]
        if suffix in _INDEX_KINDS:
            dump.index(path, suffix)
        else:
            dump.segment(path)
    return EXIT_PROBLEMS if dump.damaged else 0


# -- verify ------------------------------------------------------------------------------

def verify_log(args: argparse.Namespace) -> int:
    """``verify``: ``Log.check`` with a progress bar; exit code 3 if a problem remains."""
    started = time.monotonic()
    progress = Progress("verifying")
    with opened_log(args, read_only=not args.fix) as log:
        try:
            report = log.check(fix=args.fix, progress=progress)
        finally:
            progress.finish()
        root = log.path
    elapsed = time.monotonic() - started
    if args.json:
        write_json({**report.to_dict(), "seconds": round(elapsed, 3)}, sys.stdout)
        return 0 if report.ok else EXIT_PROBLEMS
    out = sys.stdout
    if report.problems:
        table(["KIND", "FIXED", "PATH", "PROBLEM"],
              [[p.kind, "yes" if p.fixed else "no", os.path.relpath(p.path, root),
                p.message] for p in report.problems], out)
        out.write("\n")
    remaining = sum(not p.fixed for p in report.problems)
    fixed = len(report.problems) - remaining
    verdict = "OK" if report.ok else f"{remaining} problem{'s' if remaining != 1 else ''}"
    if fixed:
        verdict += f" ({fixed} fixed)"
    out.write(f"checked {report.segments} segments, {report.batches} batches, "
              f"{report.records} records, {human_bytes(report.bytes)} in {elapsed:.1f} s: "
              f"{verdict}\n")
    return 0 if report.ok else EXIT_PROBLEMS
