import numpy as np
import pytest

from nitihw.golden import counter_hash, random_bits, stream_key


def lowbias32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def test_counter_hash_matches_lowbias32():
    xs = [0, 1, 2, 0xFFFFFFFF, 123456789, 2**31]
    assert counter_hash(np.array(xs, dtype=np.int64)).tolist() == [lowbias32(x) for x in xs]
    assert counter_hash(np.arange(3)).dtype == np.uint32


def test_stream_and_bits():
    seed, step, sid = 7, 11, 3
    key = lowbias32(seed ^ lowbias32(step ^ lowbias32(sid)))
    assert stream_key(seed, step, sid) == key
    bits = random_bits(seed, step, sid, (2, 3), 4)
    want = [lowbias32(key ^ i) >> 28 for i in range(6)]
    assert bits.reshape(-1).tolist() == want
    assert bits.shape == (2, 3)


def test_bits_are_roughly_uniform():
    b = random_bits(1, 2, 3, (40000,), 1)
    assert 0.48 < b.mean() < 0.52
    with pytest.raises(ValueError):
        random_bits(1, 2, 3, (4,), 33)
