"""Each JSON message on the Kafka topic ``orders`` runs the order pipeline.

Off until a broker is configured: set ``[kafka] bootstrap`` in evflow.toml or
``EVFLOW_KAFKA_BOOTSTRAP=host:9092``. Messages that are not JSON are dead-lettered.
"""

from evflow import Rule
from evflow.sensors import KafkaSensor

orders = KafkaSensor("orders", topics="orders", group_id="evflow-example")

order_on_message = Rule(on=orders, flow="order_pipeline", params={"order": "{data}"})
