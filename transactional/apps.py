import warnings

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def create_outbox_state(sender, using: str = "default", **kwargs) -> None:
    """Create the one OutboxState row after `migrate` (and `flush`)."""
    from .models import OutboxState

    OutboxState.objects.using(using).get_or_create(pk=1)


class TransactionalConfig(AppConfig):
    name = "transactional"
    verbose_name = "Transactional email"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(create_outbox_state, sender=self)
        from anymail.exceptions import AnymailNotSupportedWarning

        # Registering: system checks, and the receivers of anymail's tracking signal.
        from . import checks, receivers, retention, unsubscribe_inbound  # noqa: F401
        from .metrics import otel
        from .webhooks import checks as webhook_checks  # noqa: F401

        otel.install_from_settings()  # only with TRANSACTIONAL_METRICS_OTEL on

        # anymail 15 dropped official SendGrid support and warns on every
        # SendGrid backend init and webhook request. We support SendGrid with
        # our own tests (docs/configuration.md, "SendGrid"), so the warning
        # would only bury real ones in the logs.
        warnings.filterwarnings("ignore", category=AnymailNotSupportedWarning)
