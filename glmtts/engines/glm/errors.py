class CheckpointError(RuntimeError):
    """A checkpoint file, key or shape is missing or wrong; the message names it."""
