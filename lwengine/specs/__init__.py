"""Specification types (see :mod:`lwengine.specs.registry`)."""
