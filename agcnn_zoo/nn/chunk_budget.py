"""The default chunk budget of the full-alpha kernel, from the CPU's largest cache.

A chunk of ``E`` response entries holds about ``6 E`` float32 values at once in backward
(``Y``, ``A``, their gradients and the masks of the max reductions, see ``full_alpha/``), so
``E = cache bytes / (6 * 4)``, rounded down to a power of two, keeps a whole chunk resident.
Measured on a 2-core AMD EPYC with a 32 MiB L3 (a_p4cnn / ach_p4cnn, batch 128): 2^20 and
2^22 were the fastest budgets, 2^16 (op overheads) and 2^24 (main memory) 2-4x slower.
``AGCNN_ZOO_CHUNK_ELEMENTS`` overrides the detection; ``set_max_chunk_elements`` sets it
per model.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..io import env

#: used when the cache size cannot be read (no Linux sysfs): the 32 MiB case above
FALLBACK_CACHE_BYTES = 32 << 20
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)", re.IGNORECASE)


@lru_cache(maxsize=4)
def largest_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of the largest data or unified cache of CPU 0 (sysfs), or the fallback."""
    sizes = []
    for index in sorted(root.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            m = _SIZE.match((index / "size").read_text())
        except OSError:
            continue
        if m:
            sizes.append(int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()])
    return max(sizes, default=FALLBACK_CACHE_BYTES)


def default_chunk_elements(cache_bytes: int = None) -> int:
    """The budget for a cache of ``cache_bytes`` (detected when None), or the integer in
    ``AGCNN_ZOO_CHUNK_ELEMENTS`` (read now: a bad value fails here, naming the variable); at
    least 2^16 (smaller chunks only add op overhead)."""
    value = env.chunk_elements()
    if value is not None:
        return value
    if cache_bytes is None:
        cache_bytes = largest_cache_bytes()
    elements = max(1 << 16, cache_bytes // (6 * 4))
    return 1 << (elements.bit_length() - 1)
