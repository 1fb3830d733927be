"""The admin's "Providers" page: each provider's circuit breaker and rate limit."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from . import breaker, ratelimit
from .conf import providers
from .models import ProviderState


@admin.register(ProviderState)
class ProviderStateAdmin(admin.ModelAdmin):
    """Written by the workers; an operator may only close a breaker early."""

    list_display = ("provider", "position", "breaker", "failures", "opened_at", "retry_at", "rate",
                    "short_error")
    fields = readonly_fields = ("provider", "position", "breaker", "failures", "window_started_at",
                                "opened_at", "retry_at", "rate", "account_rate",
                                "account_rate_checked_at", "error", "updated_at")
    actions = ("close_breaker",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ProviderState | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ProviderState | None = None) -> bool:
        return obj is None and super().has_change_permission(request)  # the action only

    @admin.display(description="failover order")
    def position(self, state: ProviderState) -> str:
        order = list(providers())
        if state.provider not in order:
            return "not configured"
        return "primary" if order[0] == state.provider else f"{order.index(state.provider) + 1}."

    @admin.display(description="circuit breaker", ordering="state")
    def breaker(self, state: ProviderState) -> str:
        colour = {"closed": "#2e7d32", "open": "#c62828"}.get(state.state, "#ef6c00")
        return format_html('<strong style="color: {}">{}</strong>', colour, state.get_state_display())

    @admin.display(description="rate limit")
    def rate(self, state: ProviderState) -> str:
        configured = ratelimit.configured_rates()
        if state.provider in configured:
            rate = configured[state.provider]
            return f"{rate:g}/s (TRANSACTIONAL_RATE_LIMITS)" if rate else "none (off)"
        if state.provider == "ses" and state.account_rate:
            return f"{state.account_rate:g}/s (the SES account's MaxSendRate)"
        return "none"

    @admin.display(description="last error")
    def short_error(self, state: ProviderState) -> str:
        return Truncator(state.last_error).chars(80)

    @admin.display(description="last error")
    def error(self, state: ProviderState) -> str:
        return format_html("<pre>{}</pre>", state.last_error) if state.last_error else "-"

    @admin.action(description="Close the circuit breaker (send through it again now)",
                  permissions=["change"])
    def close_breaker(self, request: HttpRequest, queryset: QuerySet[ProviderState]) -> None:
        names = list(queryset.values_list("provider", flat=True))
        for name in names:
            breaker.reset(name)
        self.message_user(request, f"Closed the circuit breaker of {', '.join(names)}.", messages.SUCCESS)
