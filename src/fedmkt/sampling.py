"""Client sampling: which clients a round asks (`fedmkt.clients_per_round`), as FL users sample.

The draw depends on the run seed and the round number only, never on what ran before, so a resumed
run asks the same clients as one that never stopped, and a local run the same as Flower. Clients not
drawn idle that round: no request, no training, their adapters as they were. Every client is still
evaluated (an evaluation measures every party, as Flower's fraction_evaluate is apart from training).
"""

from __future__ import annotations

import math

import numpy as np

SAMPLING_STREAM = 0x5A4D  # keeps these draws apart from every other use of the run seed


def sample_size(clients: int, per_round: float | None) -> int:
    """How many of `clients` a round asks: all (None), a whole count, or a fraction (rounded up, at least 1)."""
    if per_round is None:
        return clients
    if per_round >= 1:
        return min(int(per_round), clients)
    return max(1, math.ceil(per_round * clients))


def sampled_clients(names: list[str], per_round: float | None, seed: int, round_no: int) -> list[str]:
    """The clients round `round_no` asks, in config order."""
    size = sample_size(len(names), per_round)
    if size >= len(names):
        return list(names)
    rng = np.random.default_rng([SAMPLING_STREAM, seed, round_no])
    chosen = set(rng.choice(len(names), size=size, replace=False).tolist())
    return [name for index, name in enumerate(names) if index in chosen]
