"""The exceptions we raise. Configuration errors deliberately sit outside the root."""

from django.core.exceptions import ImproperlyConfigured


class TransactionalError(Exception):
    """Root of our runtime errors."""


class MessageTooLarge(TransactionalError, ValueError):
    """The encoded message is larger than TRANSACTIONAL_MAX_MESSAGE_BYTES."""


class DeliveryError(TransactionalError):
    """A provider refused or failed a message; carries the provider's words."""

    def __init__(self, message: str, *, message_id: int | None = None, provider: str = "") -> None:
        super().__init__(message)
        self.message_id = message_id
        self.provider = provider


class ProviderConfigurationError(ImproperlyConfigured):
    """The delivery set-up cannot work (e.g. it would loop into the outbox).

    Not a TransactionalError, so that nothing catching ours swallows it.
    """


class ProvidersUnavailable(DeliveryError):
    """Every provider's circuit breaker is open; the message waits for a probe."""

    def __init__(self, message: str, *, retry_at=None) -> None:
        super().__init__(message)
        self.retry_at = retry_at
