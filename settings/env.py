"""Strict, typed reads of the process environment.

This is the only module that touches ``os.environ``. Every reader names the
variable in its error, so a misconfigured deployment says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from email.utils import getaddresses

from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


class Env:
    """Read variables from ``environ`` (the process environment by default).

    An empty or blank value counts as unset, so ``FOO=`` in a ``.env`` file
    falls back to the default rather than configuring an empty string.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def is_set(self, name: str) -> bool:
        return bool(self.environ.get(name, "").strip())

    def missing(self, *requirements: str | tuple[str, ...]) -> list[str]:
        """Return the requirements that are unset, in order.

        A tuple is a choice: ``("AWS_REGION", "AWS_DEFAULT_REGION")`` is met
        by either and reported as "AWS_REGION or AWS_DEFAULT_REGION".
        """
        absent = []
        for requirement in requirements:
            names = requirement if isinstance(requirement, tuple) else (requirement,)
            if not any(self.is_set(name) for name in names):
                absent.append(" or ".join(names))
        return absent

    def require(self, *requirements: str | tuple[str, ...]) -> None:
        """Raise ImproperlyConfigured naming every unset variable at once."""
        if absent := self.missing(*requirements):
            raise ImproperlyConfigured(
                "Missing required environment variable(s): "
                f"{', '.join(absent)}. See .env.example and docs/configuration.md."
            )

    def str(self, name: str, default: str | _Required = REQUIRED) -> str:
        if self.is_set(name):
            return self.environ[name].strip()
        if default is REQUIRED:
            self.require(name)
        return default

    def first(self, *names: str, default: str | _Required = REQUIRED) -> str:
        """Return the value of the first set variable among ``names``."""
        for name in names:
            if self.is_set(name):
                return self.str(name)
        if default is REQUIRED:
            raise ImproperlyConfigured(
                f"Missing required environment variable: {' or '.join(names)}."
            )
        return default

    def bool(self, name: str, default: bool) -> bool:
        if not self.is_set(name):
            return default
        value = self.str(name).lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name}={self.environ[name]!r} is not a boolean; "
            "use one of true/false, yes/no, on/off, 1/0."
        )

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        if not self.is_set(name):
            return default
        try:
            value = int(self.str(name))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}={self.environ[name]!r} is not a whole number."
            ) from None
        return self._at_least(name, value, minimum)

    def float(
        self, name: str, default: float, *, minimum: float | None = None
    ) -> float:
        if not self.is_set(name):
            return default
        try:
            value = float(self.str(name))
        except ValueError:
            raise ImproperlyConfigured(f"{name}={self.environ[name]!r} is not a number.") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ImproperlyConfigured(f"{name}={self.environ[name]!r} is not a finite number.")
        return self._at_least(name, value, minimum)

    def list(
        self, name: str, default: Sequence[str] = (), *, separator: str | None = ","
    ) -> list[str]:
        """Split on ``separator`` (None: any whitespace), dropping empty items."""
        if not self.is_set(name):
            return list(default)
        return [item.strip() for item in self.str(name).split(separator) if item.strip()]

    def choice(self, name: str, choices: Sequence[str], default: str = "") -> str:
        value = self.str(name, default=default).lower()
        if value and value not in choices:
            raise ImproperlyConfigured(
                f"{name}={self.environ[name]!r} is not supported; "
                f"choose one of: {', '.join(choices)}."
            )
        return value

    def addresses(self, name: str, default: str = "") -> list[tuple[str, str]]:
        """Parse ``"Ops <ops@example.com>, dev@example.com"`` into (name, address) pairs."""
        raw = self.str(name, default=default)
        pairs = getaddresses([raw]) if raw else []
        for _, address in pairs:
            if "@" not in address or address.startswith("@") or address.endswith("@"):
                raise ImproperlyConfigured(
                    f"{name}={raw!r} is not a comma-separated list of email "
                    'addresses (e.g. "Ops <ops@example.com>, dev@example.com").'
                )
        return pairs

    def formatted_addresses(self, name: str, default: str = "") -> list[str]:
        """Like ``addresses()``, each as ``"Name" <address>`` (internationalized ones too)."""
        return [
            f'"{display}" <{address}>' if (display := label.replace("\\", "\\\\").replace('"', '\\"'))
            else address
            for label, address in self.addresses(name, default=default)
        ]

    @staticmethod
    def _at_least(name: str, value, minimum):
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{name} must be at least {minimum} (got {value}).")
        return value


env = Env()
