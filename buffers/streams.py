"""The one seeded-stream scheme of buffercast: every random draw comes from a stream keyed by (seed, SKU, purpose).

A stream is SplitMix64 (Steele, Lea & Flood 2014): output j of the stream keyed k is mix(k + (j + 1) * GAMMA), with k
the first 64 bits of blake2b("seed␟sku[␟purpose]"). So a SKU's draws depend only on the seed, its own id and what they
are for: never on its position in a batch, on the other SKUs next to it or on how the catalogue is partitioned (the
scale-out runs stages per partition of SKUs and must get the same numbers). Equal keys share a stream: common random
numbers, e.g. the same lead times for a SKU under every disruption scenario.

Purposes in use:
- none: the bootstrap of a SKU's lead-time demand (`buffers.lead_time_demand.bootstrap_lead_time_demand`);
- the window's cutoff date: the bootstrap drawn at a backtest window (`bootstrap_window_coverage`);
- "lead_time": the lead times of the (R, s, S) simulation (`evaluation.simulate.lead_time_draws`).

Pure numpy; vectorised over SKUs and draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy import special

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
SEPARATOR = "\x1f"  # ASCII unit separator: cannot be confused with a character of an id printed by a person


def stream_keys(seed: int, skus: Sequence[object], purpose: str | Sequence[str] | None = None) -> np.ndarray:
    """One 64-bit stream key per SKU: blake2b of the seed, the SKU's id and the purpose (one for all SKUs, or one per
    SKU, e.g. a window's cutoff), joined by SEPARATOR."""
    if purpose is None:
        names = (f"{seed}{SEPARATOR}{u}" for u in skus)
    elif isinstance(purpose, str):
        names = (f"{seed}{SEPARATOR}{u}{SEPARATOR}{purpose}" for u in skus)
    else:
        names = (f"{seed}{SEPARATOR}{u}{SEPARATOR}{p}" for u, p in zip(skus, purpose, strict=True))
    digests = (hashlib.blake2b(name.encode(), digest_size=8).digest() for name in names)
    return np.array([int.from_bytes(d, "little") for d in digests], np.uint64)


def uniform_bits(keys: np.ndarray, n: int) -> np.ndarray:
    """(len(keys), n) uint64: outputs 0..n-1 of each key's stream (wrapping uint64 arithmetic)."""
    x = keys[:, None] + np.arange(1, n + 1, dtype=np.uint64)[None, :] * _GAMMA
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def standard_normals(keys: np.ndarray, n: int) -> np.ndarray:
    """(len(keys), n) standard normal draws: the inverse normal CDF of 53-bit uniforms in (0, 1) of each stream."""
    u = ((uniform_bits(keys, n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return special.ndtri(u)
