import warnings

from django.apps import AppConfig


class TransactionalConfig(AppConfig):
    name = "transactional"
    verbose_name = "Transactional email"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.exceptions import AnymailNotSupportedWarning

        # Registering: system checks, and the receivers of anymail's tracking signal.
        from . import checks, receivers  # noqa: F401
        from .webhooks import checks as webhook_checks  # noqa: F401

        # anymail 15 dropped official SendGrid support and warns on every
        # SendGrid backend init and webhook request. We support SendGrid with
        # our own tests (docs/configuration.md, "SendGrid"), so the warning
        # would only bury real ones in the logs.
        warnings.filterwarnings("ignore", category=AnymailNotSupportedWarning)
