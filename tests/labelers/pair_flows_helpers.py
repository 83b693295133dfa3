"""Build and subset `labelers.flow.PairFlows` by hand for the depth and mask tests."""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, Sequence

import numpy as np

from labelers.flow import PairFlows


def make_pair_flows(
    pairs: Sequence[tuple[int, int]],
    flow_fwd_px: Sequence[np.ndarray],
    valid_fwd: Sequence[np.ndarray],
    flow_bwd_px: Sequence[np.ndarray] | None = None,
    valid_bwd: Sequence[np.ndarray] | None = None,
) -> PairFlows:
    """`PairFlows` of given per-pair flows; without backward flows F_{j->i} is zero and invalid.

    Uncertainty and forward-backward error are zero: the depth and mask labelers read neither.
    """
    fwd = np.stack(flow_fwd_px).astype(np.float32)
    bwd = np.zeros_like(fwd) if flow_bwd_px is None else np.stack(flow_bwd_px).astype(np.float32)
    valid = np.stack(valid_fwd).astype(bool)
    valid_b = np.zeros_like(valid) if valid_bwd is None else np.stack(valid_bwd).astype(bool)
    zeros = np.zeros(valid.shape, np.float32)
    return PairFlows(np.asarray(pairs, np.int64), fwd, bwd, zeros, zeros, valid, valid_b, zeros, zeros)


def select_pairs(flows: PairFlows, keep: Callable[[int, int], bool]) -> PairFlows:
    """The pairs (i, j) of `flows` for which keep(i, j) holds."""
    mask = np.array([keep(i, j) for i, j in flows.pairs.tolist()], bool)
    return PairFlows(**{f.name: getattr(flows, f.name)[mask] for f in fields(PairFlows)})
