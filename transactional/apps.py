import warnings

from django.apps import AppConfig


class TransactionalConfig(AppConfig):
    name = "transactional"
    verbose_name = "Transactional email"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.exceptions import AnymailNotSupportedWarning

        from . import checks  # noqa: F401  (registers the system checks)

        # anymail 15 dropped official SendGrid support and warns on every
        # SendGrid backend init and webhook request. We support SendGrid with
        # our own tests (docs/configuration.md, "SendGrid"), so the warning
        # would only bury real ones in the logs.
        warnings.filterwarnings("ignore", category=AnymailNotSupportedWarning)
