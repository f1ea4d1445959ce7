"""Publish a generation request straight to Kafka (as an enterprise system would) and follow it there.

    FRAMEBUS_KAFKA_BOOTSTRAP=127.0.0.1:9092 FRAMEBUS_TENANT=acme \
        python examples/publish_kafka.py "a blue square moving up on a black background"
"""

import sys
import uuid

from framebus.client import FramebusClient

with FramebusClient() as client:  # FRAMEBUS_* settings: bootstrap servers, tenant, topic prefix
    handle = client.submit({"request_id": f"order-{uuid.uuid4().hex[:12]}", "prompt": sys.argv[1],
                            "tier": "standard", "metadata": {"source": "publish_kafka.py"}})
    print(f"on {handle.topic}[{handle.partition}] at offset {handle.offset}: {handle.request_id}")
    result = handle.wait(timeout=600)  # rides the client's one status follower: no scan per call
    print(f"{result.state.value}: {result.output.url if result.output else result.error}")
    sys.exit(0 if result.state.value == "completed" else 1)
