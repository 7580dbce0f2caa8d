"""Text frontend: normalization, segmenting, Chinese G2P and pronunciation overrides."""

from glmtts.frontend.frontend import TextFrontend

__all__ = ["TextFrontend"]
