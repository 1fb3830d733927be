"""Keep secrets out of error reports (the mail ADMINS get, the DEBUG page)."""

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretSafeReporterFilter(SafeExceptionReporterFilter):
    """Also hide credentials Django's default filter shows.

    Django hides names containing API, TOKEN, KEY, SECRET, PASS or SIGNATURE,
    in settings and in ``request.META``. It shows ``HTTP_AUTHORIZATION`` (the
    ESPs' webhook basic auth), cookies, and, under ``runserver``, whose META
    holds the whole process environment, connection URLs with passwords.
    """

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|CREDENTIAL|AUTHORIZATION|COOKIE"
        r"|DATABASE_URL|REDIS_URL",
        flags=re.I,
    )
