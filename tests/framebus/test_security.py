"""Security settings: refused early when they cannot work, the same options for every client
library, the password in no repr; and how an existing topic differs from the catalogue."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from framebus.config import ClientSettings
from framebus.schemas.topics import BY_NAME
from framebus.security import security_for
from framebus.services.common.kafka import mismatches
from framebus.services.common.settings import Replication, Settings

SASL = {"kafka_bootstrap": "kafka.example.com:9093", "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "framebus", "kafka_sasl_password": "hunter2"}


def test_every_client_library_gets_the_same_security_for_the_cluster_and_no_repr_shows_the_password() -> None:
    settings = ClientSettings(**SASL)
    security = security_for(settings.bootstrap_servers)
    assert security.kafka_python() == {"security_protocol": "SASL_SSL", "ssl_cafile": None, "ssl_certfile": None,
                                       "ssl_keyfile": None, "ssl_check_hostname": True,
                                       "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "framebus",
                                       "sasl_plain_password": "hunter2"}
    aio = security.aiokafka()
    assert aio["security_protocol"] == "SASL_SSL" and aio["ssl_context"] is not None
    assert aio["sasl_plain_password"] == "hunter2"
    credentials = security.faust()["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert "hunter2" not in repr(security) + repr(settings) + security.describe()
    assert security_for("elsewhere:9092").protocol == "PLAINTEXT"


@pytest.mark.parametrize(("change", "message"), [
    ({"kafka_sasl_password": None}, "needs FRAMEBUS_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_mechanism": None, "kafka_sasl_username": None}, "needs FRAMEBUS_KAFKA_SASL_MECHANISM, "
                                                                  "FRAMEBUS_KAFKA_SASL_USERNAME"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "FRAMEBUS_KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
])
def test_settings_that_cannot_work_are_refused_at_start_in_one_line(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        ClientSettings(**{**SASL, **change})


def test_a_cluster_keeps_three_copies_and_needs_two_while_the_local_broker_keeps_one() -> None:
    assert Settings(kafka_bootstrap="kafka.example.com:9093").replication == Replication(3, 2)
    assert Settings(kafka_bootstrap=None).replication == Replication(1, 1)
    assert Settings(kafka_bootstrap="k:1", kafka_replication_factor=1).replication == Replication(1, 1)


def test_each_way_an_existing_topic_differs_from_the_catalogue_is_one_line() -> None:
    status = BY_NAME["framebus.status"]
    found = mismatches(status, (3, 1), {"cleanup.policy": "delete", "retention.ms": "604800000"}, Replication(3, 2))
    assert found == ("3 partitions, the catalogue asks 6 (adding them moves keys between partitions: left as it is)",
                     "replication factor 1, settings ask 3",
                     "cleanup.policy=delete, the catalogue asks compact,delete",
                     "retention.ms=604800000, the catalogue asks 2592000000")
    assert mismatches(status, (6, 3), status.configs(), Replication(3, 2)) == ()
