"""The pure core: hierarchy, tags, batches, quality, configuration schema.

Nothing in this package performs I/O or reads the wall clock.
"""
