"""ci_digest64, the mirror of smm/include/codeisland/digest.h (see the definition there).

Vectorised with numpy: the position-weighted lane sums reduce to two dot products per lane,
computed in wrapping uint64 arithmetic exactly as the C loop does.
"""

from __future__ import annotations

import numpy as np

_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_LANES = (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89)
_MASK = (1 << 64) - 1


def _fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK
    x ^= x >> 33
    return x


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def digest64(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """Return ci_digest64(data, len(data), seed)."""
    raw = bytes(data)
    length = len(raw)
    padded = raw + bytes(-length % 32)
    words = np.frombuffer(padded, dtype="<u8").reshape(-1, 4)
    blocks = words.shape[0]
    with np.errstate(over="ignore"):
        # a_k = lane + sum(w); b_k = sum over i of a_k after block i
        #     = blocks*lane + sum_i (blocks - i) * w_i   (all mod 2^64)
        weights = np.arange(blocks, 0, -1, dtype=np.uint64)
        sums = words.sum(axis=0, dtype=np.uint64)
        weighted = (words * weights[:, None]).sum(axis=0, dtype=np.uint64)
    h = (length * _P1) & _MASK
    for k in range(4):
        a = (_LANES[k] + int(sums[k])) & _MASK
        b = (blocks * _LANES[k] + int(weighted[k])) & _MASK
        h = (_rotl(h ^ _fmix(a), 27) * _P1 + _P2) & _MASK
        h = (_rotl(h ^ _fmix(b), 31) * _P2 + _P1) & _MASK
    return _fmix(h ^ seed)
