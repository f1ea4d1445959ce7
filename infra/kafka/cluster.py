"""A KRaft cluster of several brokers on loopback, for what one broker cannot show: replication
3 with min.insync.replicas 2, and a broker killed mid-run without losing or doubling anything.

Each member runs broker and controller in one JVM (ports of its own, one static quorum of all);
they share a cluster id, so each formats its own storage and they find each other.
"""

from __future__ import annotations

from pathlib import Path

from framebus.infra.kafka.broker import KafkaBroker, new_cluster_id
from framebus.infra.process import free_port


class ClusterBroker(KafkaBroker):
    def __init__(self, *, node_id: int, cluster_id: str, voters: str, replication: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.voters = voters
        self.replication = replication
        self.name = f"kafka-{node_id}"
        self.title = f"Kafka broker {node_id}"

    def extra_properties(self) -> str:
        # java.util.Properties keeps the last value of a key: these override the one-node template.
        copies, isr = self.replication, max(1, self.replication - 1)
        return "\n".join(["", "# A member of a cluster (infra/kafka/cluster.py)", f"node.id={self.node_id}",
                          f"controller.quorum.voters={self.voters}", f"offsets.topic.replication.factor={copies}",
                          f"transaction.state.log.replication.factor={copies}", f"transaction.state.log.min.isr={isr}",
                          f"share.coordinator.state.topic.replication.factor={copies}",
                          f"share.coordinator.state.topic.min.isr={isr}", f"default.replication.factor={copies}",
                          f"min.insync.replicas={isr}", ""])


def loopback_cluster(size: int, state_dir: Path, cache_dir: Path, *, heap: str = "320m") -> list[ClusterBroker]:
    """``size`` members (not started) with free ports; ``state_dir`` holds one directory per member."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    voters = ",".join(f"{n}@127.0.0.1:{controller}" for n, (_, controller) in enumerate(ports, 1))
    cluster_id = new_cluster_id()
    return [ClusterBroker(node_id=n, cluster_id=cluster_id, voters=voters, replication=size, host="127.0.0.1",
                          port=port, controller_port=controller, heap=heap, state_dir=state_dir / f"broker-{n}",
                          cache_dir=cache_dir)
            for n, (port, controller) in enumerate(ports, 1)]


def start_all(brokers: list[ClusterBroker]) -> None:
    """Start every member at once: none is ready until a majority of the quorum runs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(brokers)) as pool:
        failures = [f.exception() for f in [pool.submit(broker.start) for broker in brokers]]
    if any(failures):
        for broker in brokers:
            broker.stop()
        raise next(f for f in failures if f)
