"""Checks on what an embedder returns, shared by every embedder implementation."""

from __future__ import annotations

import numpy as np


def checked(vecs: np.ndarray, dim: int) -> np.ndarray:
    """``vecs`` as float32 rows of ``dim`` finite values, or ``ValueError``: a malformed vector
    must never reach the index (a NaN vector is accepted by the engine silently)."""
    out: np.ndarray = np.asarray(vecs, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != dim or not np.isfinite(out).all():
        raise ValueError("embedder produced malformed vectors")
    return out
