"""Device selection: ``auto`` picks CUDA when present."""

from __future__ import annotations

import torch

from textrl.errors import TextRLError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error.

    Raises:
        TextRLError: unknown device name, or CUDA requested but unavailable.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TextRLError(f"device: got {name!r} but CUDA is not available; expected device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TextRLError(f"device: got {name!r}; expected auto, cpu, cuda or cuda:N") from None
