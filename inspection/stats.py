"""Bounded-memory statistics over streamed columns: exact moments and a uniform sample.

`Distribution` keeps the exact count, sum, min and max of a numeric column and a uniform random
sample of at most `capacity` values (bottom-k by random priority, which merges batch by batch).
Quantiles and histograms come from the sample, and are exact while the column fits in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_CAPACITY = 8192


@dataclass
class Distribution:
    """Streaming summary of one numeric column."""

    capacity: int = SAMPLE_CAPACITY
    count: int = 0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    values: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    priorities: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    def update(self, values: np.ndarray, priorities: np.ndarray) -> None:
        """Add values (NaN ignored); `priorities` are uniform random numbers, one per value."""
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        values, priorities = values[finite], np.asarray(priorities, dtype=np.float64)[finite]
        if values.size == 0:
            return
        self.count += int(values.size)
        self.total += float(values.sum())
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        merged_values = np.concatenate([self.values, values])
        merged_priorities = np.concatenate([self.priorities, priorities])
        if merged_values.size > self.capacity:
            keep = np.argpartition(merged_priorities, self.capacity - 1)[: self.capacity]
            merged_values, merged_priorities = merged_values[keep], merged_priorities[keep]
        self.values, self.priorities = merged_values, merged_priorities

    @property
    def exact(self) -> bool:
        """Whether the sample holds every value (so quantiles are exact)."""
        return self.count == self.values.size

    def quantiles(self, points: tuple[float, ...] = (0.05, 0.5, 0.95)) -> list[float]:
        if self.values.size == 0:
            return [float("nan")] * len(points)
        return [float(value) for value in np.quantile(self.values, points)]

    def to_dict(self) -> dict[str, float | int | bool | None]:
        if self.count == 0:
            return {"count": 0}
        p5, p50, p95 = self.quantiles()
        return {"count": self.count, "mean": self.total / self.count, "min": self.minimum, "p5": p5,
                "median": p50, "p95": p95, "max": self.maximum, "exact_quantiles": self.exact}


def histogram_edges(distributions: list[Distribution], bins: int = 24, extra: list[float] = ()) -> np.ndarray:
    """Shared bin edges covering the samples of several distributions (e.g. kept and rejected)
    and any `extra` values (thresholds drawn on the plot)."""
    samples = [dist.values for dist in distributions if dist.values.size]
    if not samples:
        return np.linspace(0.0, 1.0, bins + 1)
    values = np.concatenate(samples + [np.asarray(list(extra), dtype=np.float64)])
    low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def scaled_histogram(dist: Distribution, edges: np.ndarray) -> np.ndarray:
    """Histogram of the sample, scaled to estimate counts over the whole column."""
    if dist.values.size == 0:
        return np.zeros(len(edges) - 1)
    counts, _ = np.histogram(dist.values, bins=edges)
    return counts * (dist.count / dist.values.size)


@dataclass
class BottomK:
    """A uniform sample of at most `capacity` items (any objects) by smallest random priority."""

    capacity: int
    items: list[tuple[float, object]] = field(default_factory=list)

    def offer(self, priority: float, item: object) -> None:
        if len(self.items) < self.capacity:
            self.items.append((priority, item))
            return
        worst = max(range(len(self.items)), key=lambda index: self.items[index][0])
        if priority < self.items[worst][0]:
            self.items[worst] = (priority, item)

    def threshold(self) -> float:
        """Priorities at or above this can not enter the sample (cheap pre-filter)."""
        return max(priority for priority, _ in self.items) if len(self.items) >= self.capacity else 1.0

    def sorted_items(self) -> list[object]:
        return [item for _, item in sorted(self.items, key=lambda pair: pair[0])]
