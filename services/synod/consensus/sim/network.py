"""A simulated network: delay, loss, duplication, reordering and partitions, all seeded."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class NetworkFaults:
    loss: float = 0.0
    duplicate: float = 0.0
    #: delivery delay is uniform in [min_delay, max_delay] ms; a spread wider
    #: than a tick reorders messages
    min_delay: int = 1
    max_delay: int = 5
    #: directed links that drop everything: (sender, receiver)
    blocked: set[tuple[int, int]] = field(default_factory=set)

    def cut(self, a: int, b: int) -> None:
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def isolate(self, node: int, others: set[int]) -> None:
        for o in others:
            if o != node:
                self.cut(node, o)

    def heal(self) -> None:
        self.blocked.clear()
        self.loss = 0.0
        self.duplicate = 0.0


class Network:
    def __init__(self, rng: random.Random, faults: NetworkFaults):
        self.rng = rng
        self.faults = faults

    def deliveries(self, sender: int, to: int) -> list[int]:
        """Delays (ms) at which copies of one message arrive; empty when it is dropped."""
        f = self.faults
        if (sender, to) in f.blocked or self.rng.random() < f.loss:
            return []
        copies = 2 if self.rng.random() < f.duplicate else 1
        return [self.rng.randint(f.min_delay, f.max_delay) for _ in range(copies)]
