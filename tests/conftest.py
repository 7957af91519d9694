"""Shared fixtures. The Kafka broker fixture lives in its own plugin module."""

pytest_plugins = ["tests.conftest_kafka"]
