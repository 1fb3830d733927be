"""Check a sending domain's DNS (SPF, DKIM, DMARC, bounce MX) for a provider.

``manage.py check_email_dns`` is the entry point; docs/deliverability.md
explains the records. Modules, from the outside in:

- ``target.py``: what to check for a provider (envelope domain, selectors, MX).
- ``ses.py``: the Amazon SES identity (custom MAIL FROM, Easy DKIM tokens).
- ``audit.py``: run every check and return the results.
- ``spf.py``, ``dkim.py``, ``dmarc.py``, ``mx.py``: one check family each.
- ``records.py`` and ``domains.py``: pure parsing and domain arithmetic.
- ``resolver.py``: the only code that talks to DNS.
- ``report.py``: results, the table and the JSON.
"""
