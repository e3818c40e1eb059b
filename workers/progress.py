"""Running many Ray jobs with at most a window in flight, a progress bar, ordered results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
from tqdm import tqdm

from workers.console import bar_stream


def run_windowed(submit: Callable[[Any], ray.ObjectRef], items: Sequence[Any], window: int,
                 description: str, finished: dict[int, Any] | None = None,
                 on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Submit ``submit(item)`` for every item, keeping at most ``window`` in flight (the
    config's number of workers); return the results in the order of ``items``.

    ``finished`` maps item positions to results kept from an earlier, interrupted attempt:
    those items are not submitted again. ``on_result(position, result)`` is called as each
    job finishes, so that callers can persist results one at a time.
    """
    finished = finished or {}
    results: list[Any] = [finished.get(position) for position in range(len(items))]
    todo = [position for position in range(len(items)) if position not in finished]
    in_flight: dict[ray.ObjectRef, int] = {}
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=description,
              unit="job", file=bar_stream()) as bar:
        while todo or in_flight:
            while todo and len(in_flight) < window:
                position = todo.pop(0)
                in_flight[submit(items[position])] = position
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                position = in_flight.pop(ref)
                results[position] = ray.get(ref)
                if on_result is not None:
                    on_result(position, results[position])
            bar.update(len(done))
    return results
