"""Prometheus metrics: database numbers read at scrape time, process numbers kept live.

Reading states from the database at scrape time makes every replica report the same,
deployment-wide truth; send latency and the rate limiter's wait are this process's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from pshnotify.clock import Clock
from pshnotify.domain.vocabulary import MessageWord
from pshnotify.services.delivery.delivery_stats import delivery_stats


class _DatabaseCollector(Collector):
    def __init__(self, engine: Engine, clock: Clock, waited: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock
        self.waited = waited

    def collect(self) -> Iterator[Any]:
        stats = delivery_stats(self.engine, self.clock.now())
        states = GaugeMetricFamily(
            "pshnotify_messages", "Messages by state", labels=["program", "state"]
        )
        # Labelled in the vocabulary's words ("delivered", "deferred"), as `status` says them.
        said: Counter[tuple[str, str]] = Counter()
        for (program, state), n in stats.by_state.items():
            said[program, MessageWord.of(state).value] += n
        for (program, word), n in sorted(said.items()):
            states.add_metric([program, word], n)
        yield states
        outcomes = CounterMetricFamily(
            "pshnotify_attempts", "Delivery attempts by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(stats.attempts_by_outcome.items()):
            outcomes.add_metric([outcome], n)
        yield outcomes
        classes = CounterMetricFamily(
            "pshnotify_replies", "Relay replies by class", labels=["class"]
        )
        for cls, n in sorted(stats.replies_by_class.items()):
            classes.add_metric([cls], n)
        yield classes
        yield GaugeMetricFamily(
            "pshnotify_oldest_due_seconds",
            "Age of the oldest message due and not yet sent",
            value=stats.oldest_due_seconds,
        )
        yield CounterMetricFamily(
            "pshnotify_rate_limit_wait_seconds",
            "Time this process waited for the rate limiter",
            value=self.waited(),
        )


class Metrics:
    def __init__(self, engine: Engine, clock: Clock, waited: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DatabaseCollector(engine, clock, waited))
        self.send_seconds = Histogram(
            "pshnotify_send_seconds",
            "Time from MAIL FROM to the relay's reply",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
