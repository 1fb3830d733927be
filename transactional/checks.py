"""System checks (``manage.py check``) for the outbox configuration."""

from django.conf import settings
from django.core import checks

from .conf import get_setting
from .delivery import OUTBOX_BACKEND


@checks.register(checks.Tags.compatibility)
def check_delivery_backend(app_configs, **kwargs) -> list[checks.CheckMessage]:
    backend = getattr(settings, "TRANSACTIONAL_DELIVERY_BACKEND", None)
    if not backend:
        return [
            checks.Error(
                "TRANSACTIONAL_DELIVERY_BACKEND is not set.",
                hint="Set EMAIL_PROVIDER (settings/providers.py sets it for you).",
                id="transactional.E001",
            )
        ]
    if backend == OUTBOX_BACKEND:
        return [
            checks.Error(
                "TRANSACTIONAL_DELIVERY_BACKEND is the outbox backend itself; mail would loop.",
                hint="Keep EMAIL_BACKEND as the outbox and point TRANSACTIONAL_DELIVERY_BACKEND "
                "at the backend that really sends.",
                id="transactional.E002",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_lease(app_configs, **kwargs) -> list[checks.CheckMessage]:
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or 0
    lease = get_setting("LEASE_SECONDS")
    # A claimed batch waits for earlier calls in the pool: the last message of
    # a batch may start BATCH_SIZE / CONCURRENCY timeouts after its claim.
    rounds = -(-get_setting("BATCH_SIZE") // get_setting("CONCURRENCY"))
    if timeout and lease <= 2 * rounds * timeout:
        return [
            checks.Warning(
                f"TRANSACTIONAL_LEASE_SECONDS ({lease}) is not well above the longest a claimed "
                f"message may wait and run ({rounds} x EMAIL_TIMEOUT {timeout}s).",
                hint="A message whose provider call is still running could be swept and sent "
                "twice; raise the lease, or lower TRANSACTIONAL_BATCH_SIZE / EMAIL_TIMEOUT.",
                id="transactional.W001",
            )
        ]
    return []
