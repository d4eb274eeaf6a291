"""buffers/streams.py: the one seeded-stream scheme, keyed by (seed, SKU, purpose)."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import stats

from buffers.streams import standard_normals, stream_keys, uniform_bits


def test_splitmix64_matches_the_reference_sequence():
    # SplitMix64 seeded 1234567 (Vigna's reference implementation, splitmix64.c): its first five outputs.
    out = uniform_bits(np.array([1234567], np.uint64), 5)[0]
    assert out.tolist() == [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821]


def test_a_key_is_blake2b_of_seed_sku_and_purpose():
    def key(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")

    assert stream_keys(7, ["A/B"]).tolist() == [key("7\x1fA/B")]
    assert stream_keys(7, ["A/B"], "lead_time").tolist() == [key("7\x1fA/B\x1flead_time")]
    assert stream_keys(7, ["x", "y"], ["2026-01-05", "2026-02-02"]).tolist() == [key("7\x1fx\x1f2026-01-05"), key("7\x1fy\x1f2026-02-02")]


def test_a_skus_draws_depend_on_seed_sku_and_purpose_only():
    skus = ["007", "A/B", "x" * 1000, "sku-4"]
    alone = standard_normals(stream_keys(3, skus[2:3], "lead_time"), 50)[0]
    batch = standard_normals(stream_keys(3, list(reversed(skus)), "lead_time"), 50)
    np.testing.assert_array_equal(batch[1], alone)  # position and neighbours do not matter
    other_purpose = standard_normals(stream_keys(3, skus[2:3], "bootstrap"), 50)[0]
    other_seed = standard_normals(stream_keys(4, skus[2:3], "lead_time"), 50)[0]
    assert not np.array_equal(alone, other_purpose) and not np.array_equal(alone, other_seed)
    assert abs(np.corrcoef(alone, other_purpose)[0, 1]) < 0.5


def test_standard_normals_are_standard_normal():
    z = standard_normals(stream_keys(11, [f"s{i}" for i in range(200)], "lead_time"), 1000).ravel()
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
