"""Imports every module that defines tables, so that the metadata is complete."""

from shipyard.store import tables  # noqa: F401
