"""The local broker with a SASL_SSL listener: TLS with a certificate made at start, SCRAM users.

What a managed cluster (Confluent Cloud, MSK, Aiven) looks like to a client, on loopback:
the tests run the pipeline over it, and a wrong password or an untrusted certificate
against it. Certificates are made with keytool (the JRE's) into ``<state>/tls``: a
self-signed broker certificate for 127.0.0.1 and localhost, its PEM (the CA a client
trusts) and a truststore for the broker's own connections to itself. SCRAM credentials
are written at storage format (``--add-scram``), as KRaft wants them.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from framebus.infra.errors import StartupError
from framebus.infra.kafka.broker import KafkaBroker, _tool

MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"  # the broker's own login on its listener (inter-broker traffic)


class SecuredKafkaBroker(KafkaBroker):
    name = "kafka-secured"
    title = "Kafka broker (SASL_SSL)"
    listener = "SASL_SSL"

    def __init__(self, *, users: dict[str, str], authorizer: bool = False, super_users: tuple[str, ...] = (),
                 oauth: bool = False, **kwargs) -> None:
        """``users``: SCRAM user name to password, created at format. ``authorizer``: run KRaft's
        StandardAuthorizer, denying whatever no ACL allows; ``super_users`` (user names) bypass it.
        ``oauth``: the listener also takes OAUTHBEARER, validating tokens as Kafka does without an
        identity provider of its own (unsecured JWS: the ``sub`` claim names the user, ``exp`` is
        checked, no signature), which is what a client's side of OAuth needs to be tested against."""
        super().__init__(**kwargs)
        self.oauth = oauth
        self.users = dict(users)
        self.authorizer = authorizer
        self.super_users = super_users
        self.tls_dir = self.state_dir / "tls"
        self.keystore = self.tls_dir / "broker.p12"
        self.truststore = self.tls_dir / "trust.p12"
        self.cafile = self.tls_dir / "ca.pem"
        self._store_password = secrets.token_hex(12)
        self._broker_password = secrets.token_hex(12)

    def prepare(self) -> None:
        self._make_certificates()
        super().prepare()

    def extra_properties(self) -> str:
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{BROKER_USER}" '
                f'password="{self._broker_password}";')
        mechanisms = f"{MECHANISM},OAUTHBEARER" if self.oauth else MECHANISM
        oauth = (["listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer."
                  f'OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="{BROKER_USER}";']
                 if self.oauth else [])
        return "\n".join(["", "# SASL_SSL (infra/kafka/secured.py)",
                          f"sasl.enabled.mechanisms={mechanisms}", f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
                          f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}", *oauth,
                          f"ssl.keystore.location={self.keystore}", "ssl.keystore.type=PKCS12",
                          f"ssl.keystore.password={self._store_password}",
                          f"ssl.truststore.location={self.truststore}", "ssl.truststore.type=PKCS12",
                          f"ssl.truststore.password={self._store_password}", *self._authorizer_properties(), ""])

    def _authorizer_properties(self) -> list[str]:
        if not self.authorizer:
            return []
        # The broker reaches its controller as a user too (PLAIN on the loopback controller listener:
        # KRaft keeps SCRAM credentials in the metadata the controller serves, so SCRAM cannot log in there).
        controller_jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{BROKER_USER}" '
                           f'password="{self._broker_password}" user_{BROKER_USER}="{self._broker_password}";')
        supers = ";".join(f"User:{name}" for name in (BROKER_USER, *self.super_users))
        return ["", "# StandardAuthorizer: whatever no ACL allows is denied",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false", f"super.users={supers}",
                f"listener.security.protocol.map={self.listener}:{self.listener},CONTROLLER:SASL_PLAINTEXT",
                "sasl.mechanism.controller.protocol=PLAIN",
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                f"listener.name.controller.plain.sasl.jaas.config={controller_jaas}"]

    def format_args(self) -> list[str]:
        users = {BROKER_USER: self._broker_password, **self.users}
        return [arg for name, password in users.items()
                for arg in ("--add-scram", f"{MECHANISM}=[name={name},password={password}]")]

    def client_options(self) -> dict:
        name, password = next(iter(self.users.items()))
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "sasl_plain_username": name,
                "sasl_plain_password": password, "ssl_cafile": str(self.cafile)}

    def _make_certificates(self) -> None:
        # Passwords are new each start, so the stores are too (they live only as long as the state dir).
        keytool = _tool("keytool", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.keystore, self.truststore, self.cafile):
            path.unlink(missing_ok=True)
        store = ["-storetype", "PKCS12", "-storepass", self._store_password]
        self._run([keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
                   "-validity", "2", "-dname", "CN=framebus-test-broker", "-ext", "SAN=IP:127.0.0.1,DNS:localhost",
                   "-keystore", str(self.keystore), *store])
        self._run([keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(self.keystore), *store,
                   "-file", str(self.cafile)])
        self._run([keytool, "-importcert", "-noprompt", "-alias", "broker", "-file", str(self.cafile),
                   "-keystore", str(self.truststore), *store])

    @staticmethod
    def _run(command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise StartupError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[-300:]}",
                               "check the Java runtime's keytool")


def self_signed_pem(path: Path) -> Path:
    """A certificate no broker uses: trusting only it must make the TLS handshake fail."""
    openssl = _tool("openssl", "apt-get install openssl")
    key = path.with_suffix(".key")
    done = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=someone-else", "-keyout", str(key), "-out", str(path)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise StartupError(f"openssl failed: {done.stderr.strip()[-300:]}", "check openssl")
    return path
