"""Edge → hub over NATS JetStream, with the spool as the edge's acknowledgement point.

::

    pipeline ─▶ SpoolWriter ─▶ spool (fsync) ─▶ EdgePublisher ─▶ JetStream ISTHMUS_<SITE>
                                     ▲ ack up to the highest contiguous publish ack │
                                     └──────────────────────────────────────────────┘
    JetStream ─▶ HubConsumer (durable pull consumer, shared by all hubs) ─▶ Store commit
              ◀─ ack after the commit (+ hub_ledger row); bad messages ─▶ hub_quarantine

* :mod:`.wire` — the versioned binary message (pure).
* :mod:`.connect` — names (subject, stream, message id), options, credentials from env.
* :mod:`.spooler` — pipeline batches merged and appended to the spool.
* :mod:`.publisher` — spool → JetStream, pipelined, acknowledged, replay marked historical.
* :mod:`.hub` and :mod:`.ledger` — JetStream → historian, ack after commit, quarantine.
* :mod:`.commands` — commands across sites: orders hub → edge, results back, the edges'
  writable tag settings (plumbing only; the gate is ``isthmus.security.commands``).

Delivery is at-least-once end to end; duplicates are removed by JetStream's message-id
window and, beyond it, by the historian's idempotent ``(tag, ts)`` writes.  See
``docs/decisions/0006-edge-hub.md``.
"""
