"""Transports carry batches from the pipeline to their consumers."""
