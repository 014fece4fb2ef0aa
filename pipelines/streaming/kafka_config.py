"""Connection settings for kafka-python clients: bootstrap plus pass-through security options.

Plain, picklable data so Beam can ship it to workers; each DoFn builds its own clients in ``setup``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: kafka-python settings a user may pass through (``--kafka-option security_protocol=SASL_SSL`` or the
#: dedicated flags); anything else is refused so a typo is a clear error, not a silently ignored setting.
SECURITY_KEYS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name",
    "sasl_oauth_token_provider",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_crlfile",
    "ssl_check_hostname",
    "ssl_ciphers",
    "client_id",
)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    security: Mapping[str, Any] = field(default_factory=dict)

    def client_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap.split(","), **dict(self.security)}

    def consumer(self, group_id: str | None = None, **extra: Any):
        from kafka import KafkaConsumer

        settings = dict(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                        max_poll_interval_ms=5000)
        return KafkaConsumer(**{**settings, **self.client_kwargs(), **extra})

    def producer(self, **extra: Any):
        from kafka import KafkaProducer

        settings = dict(acks="all", linger_ms=5, retries=2**31 - 1)
        return KafkaProducer(**{**settings, **self.client_kwargs(), **extra})


def parse_security_options(pairs: list[str]) -> dict[str, Any]:
    """``["security_protocol=SSL", "ssl_check_hostname=false"]`` -> kafka-python kwargs."""
    from schemas.errors import UserError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UserError(f"Kafka option {pair!r} must look like NAME=VALUE")
        if key not in SECURITY_KEYS:
            raise UserError(f"Kafka option {key!r} is not supported (known: {', '.join(SECURITY_KEYS)})")
        lowered = value.strip().lower()
        options[key] = {"true": True, "false": False}.get(lowered, value)
    return options
