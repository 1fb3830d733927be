"""Mail previews, like Rails' mailer previews: sample mails rendered, never sent.

Put a ``mail_previews.py`` module in any installed app::

    from transactional.previews import MailPreview, Preview

    class BirthdayPreviews(MailPreview):
        def beatles_alert(self) -> Preview:
            return Preview("birthday/beatles_alert", context={...}, to=["admin@acme.test"])

Every subclass registers itself under a slug (``birthday``, from the class
name without ``Previews``); every public method is one preview. The modules
are imported on first use of the registry, and ``/dev/mail-previews/``
shows them all.
"""

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives
from django.utils.module_loading import autodiscover_modules

from .templated import render_templated

#: Module name, in each installed app, that holds its MailPreview classes.
PREVIEWS_MODULE = "mail_previews"

_registry: dict[str, type["MailPreview"]] = {}


@dataclass(frozen=True)
class Preview:
    """One sample mail: the template, its sample context, and its envelope."""

    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    to: Sequence[str] = ()
    from_email: str | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: Sequence[str] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def render(self) -> EmailMultiAlternatives:
        """Build the mail as send_templated() would, without sending it."""
        attributes = {"tags": list(self.tags), "metadata": dict(self.metadata)}
        return render_templated(
            self.template, self.context, to=self.to, from_email=self.from_email, cc=self.cc,
            bcc=self.bcc, reply_to=self.reply_to, headers=self.headers,
            **{name: value for name, value in attributes.items() if value},
        )


class MailPreview:
    """Base class of a group of previews; each public method returns one Preview."""

    #: URL slug of the group; defaults to the class name without "Previews", snake_cased.
    slug: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "slug" not in vars(cls):
            cls.slug = _slug(cls.__name__)
        _register(cls)

    @classmethod
    def preview_names(cls) -> list[str]:
        """Return the names of the preview methods, in definition order."""
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__[: cls.__mro__.index(MailPreview)]):
            for name, value in vars(klass).items():
                if not name.startswith("_") and inspect.isfunction(value):
                    names[name] = None
        return list(names)

    def preview(self, name: str) -> Preview:
        """Return the preview called ``name``."""
        if name not in self.preview_names():
            raise LookupError(f"{type(self).__name__} has no preview {name!r}.")
        result = getattr(self, name)()
        if not isinstance(result, Preview):
            raise TypeError(
                f"{type(self).__name__}.{name}() returned {type(result).__name__}, not a Preview."
            )
        return result


def groups() -> list[type[MailPreview]]:
    """Return every registered preview class, sorted by slug."""
    _autodiscover()
    return [_registry[slug] for slug in sorted(_registry)]


def get_group(slug: str) -> type[MailPreview]:
    """Return the preview class registered as ``slug``; raise LookupError if none is."""
    _autodiscover()
    try:
        return _registry[slug]
    except KeyError:
        raise LookupError(f"No mail previews are registered as {slug!r}.") from None


def all_previews() -> list[tuple[str, str]]:
    """Return (group slug, preview name) for every preview, e.g. to parametrize a test."""
    return [(group.slug, name) for group in groups() for name in group.preview_names()]


def get_preview(slug: str, name: str) -> Preview:
    """Return the preview ``name`` of group ``slug``; raise LookupError if there is none."""
    return get_group(slug)().preview(name)


@cache
def _autodiscover() -> None:
    autodiscover_modules(PREVIEWS_MODULE)


def _register(cls: type[MailPreview]) -> None:
    existing = _registry.get(cls.slug)
    if existing is not None and _qualified(existing) != _qualified(cls):
        raise ImproperlyConfigured(
            f"Mail preview slug {cls.slug!r} is taken by {_qualified(existing)}; "
            f"set a different `slug` on {_qualified(cls)}."
        )
    _registry[cls.slug] = cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _slug(class_name: str) -> str:
    """Return "birthday" for BirthdayPreviews, "user_mailer" for UserMailerPreview."""
    stem = re.sub(r"Previews?$", "", class_name) or class_name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()
