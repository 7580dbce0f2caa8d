"""Strict, memory-mapped loading of torch `.pt` state dicts into modules built on the meta device."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from glmtts.engines.glm.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)


def read_torch_state_dict(path: Path, wrapper_key: str | None = None) -> dict[str, torch.Tensor]:
    """Memory-map a `torch.save`d state dict (tensors only, no pickled code).

    With `wrapper_key`, a file holding `{wrapper_key: state_dict}` is unwrapped too.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # any unpickling failure means a bad or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if wrapper_key is not None and isinstance(state, Mapping) and isinstance(state.get(wrapper_key), Mapping):
        state = state[wrapper_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def assign_state_dict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    device: torch.device | str,
    dtype: torch.dtype,
) -> nn.Module:
    """Check keys and shapes against `module` (built on the meta device), assign, move to device.

    Floating tensors are cast to `dtype`; integer buffers keep theirs. Raises CheckpointError naming
    the file and the first missing, unexpected or mis-shaped key.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}")
    module.load_state_dict(state, strict=True, assign=True)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)
