"""ISA-18.2 / IEC 62682 alarm management: the pure core.

- :mod:`.expression`: a small safe expression language (no ``eval``), parsed with ``ast``.
- :mod:`.model`: alarm definitions (the plant config's ``alarms:``), templates and their
  expansion into addressable instances.
- :mod:`.state`: the alarm life cycle as a pure state machine with a journal.
- :mod:`.evaluator`: definitions over batches, in timestamp order (replay = live).

No I/O and no wall clock here: time comes from the samples and an injected clock.
"""
