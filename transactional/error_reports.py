"""Keep secrets out of error reports (the mail ADMINS get, the DEBUG page)."""

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretSafeReporterFilter(SafeExceptionReporterFilter):
    """Also hide connection URLs, which carry passwords.

    Django hides settings and ``request.META`` entries whose names contain
    API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE or HTTP_COOKIE. Under
    ``runserver`` META holds the whole process environment, and
    ``DATABASE_URL`` / ``REDIS_URL`` carry passwords in plain sight.
    """

    hidden_settings = re.compile(
        r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL|DATABASE_URL|REDIS_URL",
        flags=re.I,
    )
