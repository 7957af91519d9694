"""Pytest plugin: the real Kafka-protocol test broker (register with ``pytest_plugins``).

* ``kafka_broker`` (session): one tansu broker on a free loopback port. If it cannot start, every
  test that uses it errors with the reason; nothing is skipped.
* ``kafka_topic`` (function): a fresh topic with 4 partitions, created explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import KafkaBroker, unique_topic

KAFKA_TOPIC_PARTITIONS = 4


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A running test broker for the whole session; stopped at the end."""
    broker = KafkaBroker()
    broker.start()  # raises BrokerUnavailable with the broker's output: the test fails loudly
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def kafka_topic(kafka_broker: KafkaBroker) -> str:
    """A topic no other test uses, with 4 partitions."""
    return await kafka_broker.create_topic(unique_topic(), KAFKA_TOPIC_PARTITIONS)
