"""The admin: messages read-only with actions through services, ESP events, suppressions."""

import json
from email.message import Message as MIMEMessage
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.mail import EmailMessage
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timezone import localtime

from . import operations, provider_admin, signals, suppression  # noqa: F401  (provider_admin: its page)
from .conf import streams
from .models import Attempt, Event, Message, Recipient, Suppression, normalize_address
from .serialization import deserialize


class ReadOnlyInline(admin.TabularInline):
    """Rows the machinery writes: shown, never added, edited or deleted here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False


class RecipientInline(ReadOnlyInline):
    model = Recipient
    fields = readonly_fields = ("address", "kind", "status", "esp_message_id", "updated_at")


class AttemptInline(ReadOnlyInline):
    model = Attempt
    fields = readonly_fields = (
        "number",
        "provider",
        "outcome",
        "status_code",
        "error_type",
        "error_text",
        "started_at",
        "finished_at",
    )

    @admin.display(description="error")
    def error_text(self, attempt: Attempt) -> str:
        return _pre(attempt.error) if attempt.error else "-"


class EventInline(ReadOnlyInline):
    """The message's timeline: what the ESP reported, oldest first."""

    model = Event
    verbose_name_plural = "ESP events (timeline)"
    fields = readonly_fields = (
        "timestamp",
        "event_type",
        "address",
        "recipient",
        "reject_reason",
        "description",
        "mta_response",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        events = super().get_queryset(request).defer("raw").select_related("recipient")
        return events.order_by("timestamp", "pk")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "status",
        "priority",
        "stream",
        "provider",
        "from_email",
        "addresses",
        "subject",
        "attempts",
        "next_attempt_at",
        "short_error",
    )
    list_filter = ("status", "stream", "priority", "provider", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("subject", "recipients__address", "recipients__esp_message_id", "message_id")
    # The outbox grows large; skip the extra unfiltered COUNT(*) on every filtered page.
    show_full_result_count = False
    actions = ("retry_now", "cancel")
    inlines = (RecipientInline, EventInline, AttemptInline)
    fieldsets = (
        (None, {"fields": ("status", "stream", "priority", "provider", "from_email", "subject", "message_id")}),
        (
            "Delivery",
            {
                "fields": (
                    "attempts",
                    "error",
                    "next_attempt_at",
                    "send_at",
                    "claimed_at",
                    "sent_at",
                )
            },
        ),
        (
            "Stored",
            {
                "fields": (
                    "size",
                    "idempotency_key",
                    "bypass_suppression",
                    "created_at",
                    "updated_at",
                    "purged_at",
                )
            },
        ),
        ("Rendered", {"fields": ("rendered",)}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).defer("payload").prefetch_related("recipients")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # The actions need it; the form never saves: a save would race the workers.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False  # `manage.py outbox purge` applies the retention periods

    @admin.display(description="recipients")
    def addresses(self, message: Message) -> str:
        addresses = [recipient.address for recipient in message.recipients.all()]
        more = f" (+{len(addresses) - 2})" if len(addresses) > 2 else ""
        return ", ".join(addresses[:2]) + more

    @admin.display(description="last error")
    def short_error(self, message: Message) -> str:
        return Truncator(message.last_error).chars(60)

    @admin.display(description="last error")
    def error(self, message: Message) -> str:
        return _pre(message.last_error) if message.last_error else "-"

    @admin.display(description="message as stored")
    def rendered(self, message: Message) -> str:
        if message.purged_at is not None:
            return f"purged on {date_format(localtime(message.purged_at), 'DATETIME_FORMAT')}"
        try:
            email = deserialize(message.payload)
        except ValueError as error:
            return f"Cannot be read: {error}"
        return render_email(email)

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        selected = queryset.count()
        retried = operations.retry(queryset)
        self.message_user(
            request,
            f"Re-queued {retried.requeued} of {selected} selected message(s); "
            "only failed and retrying ones can be retried.",
            messages.SUCCESS,
        )
        if retried.purged:
            self.message_user(
                request,
                f"Skipped {retried.purged} message(s) whose body was purged: nothing left to send.",
                messages.WARNING,
            )

    @admin.action(description="Cancel", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        selected = queryset.count()
        cancelled = operations.cancel(queryset)
        self.message_user(
            request,
            f"Cancelled {cancelled} of {selected} selected message(s); "
            "only queued and retrying ones can be cancelled.",
            messages.SUCCESS,
        )


def render_email(email: EmailMessage) -> SafeString:
    """Show an email's bodies, headers and attachments as escaped HTML, never rendered."""
    alternatives = getattr(email, "alternatives", [])
    attachments = [_describe_attachment(attachment) for attachment in email.attachments]
    sections = [
        ("Text body", _pre(email.body)),
        *((f"Alternative ({mimetype})", _pre(content)) for content, mimetype in alternatives),
        ("Headers", format_html_join("", "<div><code>{}: {}</code></div>", _headers(email))),
        ("Attachments", format_html_join("", "<div>{} ({})</div>", attachments) or "-"),
    ]
    return format_html_join("", "<h4>{}</h4>{}", sections)


def _pre(text: str) -> SafeString:
    """Return ``text`` escaped, in a <pre>."""
    return format_html("<pre>{}</pre>", text)


def _headers(email: EmailMessage) -> list[tuple[str, str]]:
    """Return the address headers that are set, then the extra headers."""
    addresses = [
        ("From", email.from_email),
        ("To", email.to),
        ("Cc", email.cc),
        ("Bcc", email.bcc),
        ("Reply-To", email.reply_to),
    ]
    headers = [
        (name, value if isinstance(value, str) else ", ".join(value)) for name, value in addresses
    ]
    return [(name, value) for name, value in headers if value] + list(email.extra_headers.items())


def _describe_attachment(attachment: Any) -> tuple[str, str]:
    """Return an attachment's file name (or type) and its size."""
    if isinstance(attachment, MIMEMessage):  # MIMEBase, or Django 6's MIMEPart
        name = attachment.get_filename() or attachment.get_content_type()
        return name, filesizeformat(len(attachment.get_payload(decode=True) or b""))
    filename, content, mimetype = attachment
    return filename or mimetype, filesizeformat(_size(content))


def _size(content: Any) -> int:
    """Return the size in bytes of attachment content as stored."""
    if isinstance(content, str):
        return len(content.encode())
    if isinstance(content, EmailMessage):
        return len(content.message().as_bytes())
    if isinstance(content, MIMEMessage):
        return len(content.as_bytes())
    return len(content)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """ESP tracking events: written by the webhook receiver, read-only here."""

    list_display = (
        "timestamp",
        "esp",
        "event_type",
        "address",
        "message_link",
        "reject_reason",
        "received_at",
    )
    list_filter = ("esp", "event_type", "reject_reason", "timestamp")
    date_hierarchy = "timestamp"
    search_fields = ("address", "esp_message_id", "event_id")
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("esp", "event_type", "timestamp", "received_at", "event_id")}),
        ("About", {"fields": ("address", "esp_message_id", "message_link", "recipient")}),
        (
            "Details",
            {
                "fields": (
                    "reject_reason",
                    "description",
                    "mta_response",
                    "tags",
                    "metadata",
                    "user_agent",
                    "click_url",
                )
            },
        ),
        ("ESP payload", {"fields": ("raw_json",)}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    @admin.display(description="message", ordering="message")
    def message_link(self, event: Event) -> str:
        if event.message_id is None:
            return "- (not linked yet)"
        url = reverse("admin:transactional_message_change", args=[event.message_id])
        return format_html('<a href="{}">#{}</a>', url, event.message_id)

    @admin.display(description="ESP payload")
    def raw_json(self, event: Event) -> str:
        if event.raw is None:
            return "-"
        return _pre(json.dumps(event.raw, indent=2, sort_keys=True))


class SuppressionForm(forms.ModelForm):
    address = forms.EmailField(max_length=320)
    stream = forms.ChoiceField(
        required=False, help_text="Every stream, or only one (as an unsubscribe from it does)."
    )

    class Meta:
        model = Suppression
        fields = ("address", "stream", "reason", "note")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "stream" in self.fields:  # not on the read-only change page
                self.fields["stream"].choices = [(Suppression.EVERY_STREAM, "every stream")] + [
                (name, name) for name in streams()
            ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        address = cleaned.get("address")
        if address and cleaned.get("stream") and Suppression.objects.for_addresses([address]).filter(
            stream=Suppression.EVERY_STREAM
        ).exists():
            raise forms.ValidationError("This address is suppressed on every stream already.")
        return cleaned

    def clean_address(self) -> str:
        # Normalize before the unique check, as Suppression.save() would after it.
        address = normalize_address(self.cleaned_data["address"])
        # An erased address is listed by its hash only: the unique check misses it.
        if Suppression.objects.for_addresses([address]).exclude(address=address).exists():
            raise forms.ValidationError(
                "This address is on the list already, erased by `forget` (kept as a hash)."
            )
        return address


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    form = SuppressionForm
    list_display = ("address", "scope", "reason", "source", "source_event", "created_at")
    list_filter = ("reason", "stream", "source")
    list_select_related = ("event",)
    search_fields = ("address",)

    @admin.display(description="stream", ordering="stream")
    def scope(self, obj: Suppression) -> str:
        return obj.stream or "every stream"

    @admin.display(description="source event", ordering="event__timestamp")
    def source_event(self, obj: Suppression) -> str:
        """The ESP event that caused it, linked to its page."""
        if obj.event is None:
            return "-"
        url = reverse("admin:transactional_event_change", args=[obj.event.pk])
        when = (
            date_format(localtime(obj.event.timestamp), "SHORT_DATETIME_FORMAT")
            if obj.event.timestamp
            else ""
        )
        return format_html('<a href="{}">{} {}</a>', url, obj.event.event_type, when)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Suppression | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else ("stream", "source", "event", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        return False  # added by hand or by an ESP event, removed when wrong; never edited

    def save_model(
        self, request: HttpRequest, obj: Suppression, form: forms.Form, change: bool
    ) -> None:
        by = f"Added by {request.user.get_username()}"
        obj.source = "admin"
        obj.note = f"{by}: {obj.note}" if obj.note else by
        super().save_model(request, obj, form, change)
        if not change:
            signals.announce_suppressed([obj])

    def delete_model(self, request: HttpRequest, obj: Suppression) -> None:
        suppression.unsuppress(obj.address, by=request.user.get_username(), stream=obj.stream)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        by = request.user.get_username()
        for address, stream in queryset.values_list("address", "stream"):
            suppression.unsuppress(address, by=by, stream=stream)
