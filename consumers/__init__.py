"""Consumers: the processes that turn queued events into effects (see the README)."""
