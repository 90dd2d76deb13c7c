"""Store-and-forward: a durable, bounded, checksummed spool of batches on the edge.

While a conduit is closed (island) or the hub is unreachable, outbound batches are
appended here; when it reopens they are read back in append order, marked
``historical=True``, and acknowledged once the hub has committed them.

Directory layout::

    <dir>/spool-000000000042.seg   segment files; the number is the first record's seq
    <dir>/ack                      the last acknowledged seq (8 bytes LE + CRC-32)
    <dir>/LOCK                     flock: one process per spool
    <dir>/quarantine/              damaged byte ranges, kept for forensics

Record layout (little-endian), 40-byte header then payload::

    off size field
      0   4  magic  b"ISPL"
      4   1  version (1)
      5   1  flags: 0x01 the batch was already historical, 0x02 payload is zlib (level 1),
                0x04 a text section follows the columns (``Batch.text``)
      6   2  reserved (0)
      8   4  n_samples
     12   4  payload_len (= 24 * n_samples when uncompressed, + the text section)
     16   8  seq (u64, strictly increasing across segments, never reused)
     24   8  written_ns (i64, spool clock at append: the age cap uses it)
     32   4  payload CRC-32 (zlib.crc32)
     36   4  header CRC-32 of bytes 0..35
     40      payload: tag_id int32[n] | ts int64[n] | value float64[n] | quality uint32[n]
             [| text: m u32 | row u32[m] | UTF-8 JSON list of the m strings]

A record is written with one ``writev``; with ``fsync="always"`` it is ``fdatasync``-ed
before ``append`` returns.  On open every record is verified: a torn tail (a crash
mid-write) is truncated back to the last good record; a damaged region (bad header CRC,
bad payload CRC, garbage) is copied to ``quarantine/``, counted and reported with one
warning, and the reader resynchronises on the next valid header (magic + header CRC +
payload CRC + increasing seq).  Reads verify payload CRCs again.

Replayed batches carry ``historical=True``: a store's last-value table must not move
backwards on them (the DuckDB store already refuses older samples in last_value), and
the historian's idempotent (tag, ts) writes remove the duplicates that at-least-once
delivery allows after a crash between the hub's commit and the ack.

See ``docs/decisions/0004-spool-format.md`` for the choices and alternatives.
"""

from isthmus.transport.spool.aio import AsyncSpool
from isthmus.transport.spool.spool import FsyncMode, Spool, SpoolError, SpoolStats

__all__ = ["AsyncSpool", "FsyncMode", "Spool", "SpoolError", "SpoolStats"]
