"""Coverage-guided fuzzing of the decoders with atheris (libFuzzer).

    python tests/fuzz/atheris_targets.py -atheris_runs=100000

Feeds libFuzzer's inputs to the batch decoder (raw and with a recomputed checksum, to
reach the payload decoder), the offsets-sidecar reader and the index reader. Any
exception other than CorruptRecordError is a finding: libFuzzer stops and reports it.
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import xxhash

    from eventlog._format import CHECKSUM_START, HEADER, HEADER_BYTES, MAGIC, decode_batch
    from eventlog._index import OffsetIndex, TimeIndex
    from eventlog._offsets import parse
    from eventlog.errors import CorruptRecordError

_DIR = tempfile.mkdtemp(prefix="eventlog-atheris-")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 0:
        try:
            decode_batch(body, 0, len(body))
        except CorruptRecordError:
            pass
    elif mode == 1:
        # a header that checks out around fuzzed payload bytes
        count = (body[0] % 8 + 1) if body else 1
        buf = bytearray(HEADER_BYTES) + bytearray(body[1:])
        HEADER.pack_into(buf, 0, MAGIC, len(buf), 0, 1, 0, 0, count, 0, count - 1, -1, 0, 0,
                         -1)
        checksum = xxhash.xxh3_64_intdigest(bytes(buf[CHECKSUM_START:]))
        buf[8:16] = checksum.to_bytes(8, "little")
        try:
            decode_batch(buf, 0, len(buf))
        except CorruptRecordError:
            pass
    elif mode == 2:
        parse(body)
    else:
        path = os.path.join(_DIR, "00000000000000000000.index")
        with open(path, "wb") as fh:
            fh.write(body)
        for cls in (OffsetIndex, TimeIndex):
            index = cls(path, 0)
            index.load()
            index.lookup(5)
            index.close()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
