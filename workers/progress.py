"""Running many Ray jobs with at most a window in flight, a progress bar, ordered results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
from tqdm import tqdm


def run_windowed(submit: Callable[[Any], ray.ObjectRef], items: Sequence[Any], window: int,
                 description: str) -> list[Any]:
    """Submit ``submit(item)`` for every item, keeping at most ``window`` in flight (the
    config's number of workers); return the results in the order of ``items``."""
    results: list[Any] = [None] * len(items)
    in_flight: dict[ray.ObjectRef, int] = {}
    position = 0
    with tqdm(total=len(items), desc=description, unit="job") as bar:
        while position < len(items) or in_flight:
            while position < len(items) and len(in_flight) < window:
                in_flight[submit(items[position])] = position
                position += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                results[in_flight.pop(ref)] = ray.get(ref)
            bar.update(len(done))
    return results
