"""Our tracking-webhook views: anymail's, hardened, at anymail's own URLs.

``urls.py`` mounts them before ``anymail.urls`` (see project/urls.py), so
``/anymail/<esp>/tracking/`` reaches these views while anymail's inbound
webhooks stay as they are. docs/webhooks.md is the operator's guide.
"""
