"""What each ESP's events mean beyond anymail's normalization.

anymail maps every ESP to one event vocabulary, and loses on the way what
we need to act safely: whether a bounce is permanent (an SES ``Transient``
bounce is still ``bounced``; a SendGrid ``blocked`` bounce has no
reject_reason), and whether an SES open can be pinned on one recipient.
So those decisions read the ESP's own fields in ``Event.raw``, one small
table-driven function per ESP. The tables are documented in
docs/webhooks-status.md.
"""

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from django.http import QueryDict

from .models import Event, Suppression

ESP = Event.ESP
Reason = Suppression.Reason

#: anymail's ``esp_name`` -> ours.
ESP_BY_ANYMAIL_NAME: dict[str, str] = {
    "Mailgun": ESP.MAILGUN,
    "SendGrid": ESP.SENDGRID,
    "Amazon SES": ESP.AMAZON_SES,
}

#: What the recipient did, the same for every ESP.
RECIPIENT_VERDICTS: dict[str, str] = {
    "complained": Reason.COMPLAINED,
    "unsubscribed": Reason.UNSUBSCRIBED,
}


#: ESPs whose event id belongs to one address. Amazon SES gives a
#: notification's addresses one id; Mailgun signs only a token (its event id)
#: and a timestamp, so a captured signature replayed with another address
#: must not record a new event.
ONE_ADDRESS_PER_EVENT_ID = frozenset({ESP.MAILGUN, ESP.SENDGRID})


# Raw payloads
# ------------------------------------------------------------------------------


def plain(esp_event: Any) -> Any:
    """Return anymail's ``esp_event``, a legacy Mailgun form flattened to a dict."""
    if isinstance(esp_event, QueryDict):  # a legacy (form-encoded) Mailgun webhook
        return {key: values[0] if len(values) == 1 else values for key, values in esp_event.lists()}
    return esp_event


def raw_payload(esp: str, payload: Any) -> Any:
    """Return the part of a plain ``esp_event`` worth keeping as ``Event.raw``."""
    if esp == ESP.MAILGUN and isinstance(payload, Mapping):
        # The signature would let anyone who can read the row replay the
        # post (anymail keeps no replay cache); the event is all we need.
        payload = payload.get("event-data", payload)
        if isinstance(payload, Mapping):
            payload = {key: value for key, value in payload.items() if key != "signature"}
    return payload


def canonical_hash(value: Any) -> str:
    """Return the SHA-256 of ``value`` as canonical JSON (a stand-in event id)."""
    text = json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


#: Keys SendGrid added after anymail's known-key list, so anymail files
#: them under metadata (ANYMAIL_FACTS (d), "metadata leak").
SENDGRID_NOT_METADATA = frozenset(
    {
        "bounce_classification",
        "sg_machine_open",
        "sg_content_type",
        "sg_template_id",
        "sg_template_name",
    }
)


def clean_metadata(esp: str, metadata: Any) -> dict:
    """Return anymail's metadata as a dict, without keys that are not ours."""
    if not isinstance(metadata, Mapping):
        return {}
    if esp == ESP.SENDGRID:
        return {key: value for key, value in metadata.items() if key not in SENDGRID_NOT_METADATA}
    return dict(metadata)


# Automatic suppression
# ------------------------------------------------------------------------------

#: Mailgun ``reason`` of a permanent failure -> why we suppress. Absent:
#: "old" (gave up retrying), "generic", "esp-block": about this delivery,
#: not about the address.
MAILGUN_FAILURE_REASONS: dict[str, str] = {
    "bounce": Reason.BOUNCED,
    "suppress-bounce": Reason.BOUNCED,
    "suppress-complaint": Reason.COMPLAINED,
    "suppress-unsubscribe": Reason.UNSUBSCRIBED,
}

#: SendGrid ``bounce_classification`` (lower case) -> hard (a reason) or soft (None).
SENDGRID_BOUNCE_CLASSES: dict[str, str | None] = {
    "invalid address": Reason.BOUNCED,
    "mailbox unavailable": None,
    "technical": None,
    "technical failure": None,
    "content": None,
    "reputation": None,
    "frequency or volume limits": None,
    "frequency or volume too high": None,
}

#: SendGrid bounce ``type``, when the classification is absent or "Unclassified".
SENDGRID_BOUNCE_TYPES: dict[str, str | None] = {"bounce": Reason.BOUNCED, "blocked": None}

#: SendGrid ``dropped`` reason (lower case): SendGrid's own list already holds the address.
SENDGRID_DROP_REASONS: dict[str, str] = {
    "bounced address": Reason.BOUNCED,
    "invalid": Reason.REJECTED,
    "unsubscribed address": Reason.UNSUBSCRIBED,
    "spam reporting address": Reason.COMPLAINED,
}

#: SES ``bounce.bounceType`` -> hard (a reason); "Transient" and "Undetermined" are soft.
SES_BOUNCE_TYPES: dict[str, str] = {"Permanent": Reason.BOUNCED}

#: SES ``complaint.complaintFeedbackType`` values that are not a complaint.
SES_NOT_COMPLAINTS = frozenset({"not-spam"})


#: Legacy Mailgun ``dropped`` codes (anymail's reading of them): the address
#: is on Mailgun's own list already.
MAILGUN_LEGACY_DROP_CODES: dict[str, str] = {
    "605": Reason.BOUNCED,  # "Not delivering to previously bounced address"
    "607": Reason.COMPLAINED,  # previous spam complaint
}


def mailgun_suppression(event_type: str, raw: Mapping) -> str | None:
    """Return why a Mailgun event suppresses its address, or None."""
    # A legacy form repeats a field when a user variable has its name; the
    # first value is Mailgun's (as anymail reads it).
    kind = _text(_first(raw.get("event")))
    if kind == "bounced":  # legacy webhooks post permanent failures only
        return Reason.BOUNCED
    if kind == "dropped":  # legacy
        return MAILGUN_LEGACY_DROP_CODES.get(_text(_first(raw.get("code"))))
    severity = _first(raw.get("severity", "permanent"))
    if kind in ("failed", "rejected") and severity == "permanent":
        return MAILGUN_FAILURE_REASONS.get(_text(_first(raw.get("reason"))))
    return RECIPIENT_VERDICTS.get(event_type)


def sendgrid_suppression(event_type: str, raw: Mapping) -> str | None:
    """Return why a SendGrid event suppresses its address, or None."""
    kind = _text(raw.get("event"))
    if kind == "bounce":
        classification = _text(raw.get("bounce_classification")).lower()
        if classification in SENDGRID_BOUNCE_CLASSES:
            return SENDGRID_BOUNCE_CLASSES[classification]
        return SENDGRID_BOUNCE_TYPES.get(_text(raw.get("type", "bounce")).lower())
    if kind == "dropped":  # where anymail reads it: "type", else "reason"
        return SENDGRID_DROP_REASONS.get(_text(raw.get("type", raw.get("reason"))).lower())
    return RECIPIENT_VERDICTS.get(event_type)


def ses_suppression(event_type: str, raw: Mapping) -> str | None:
    """Return why an Amazon SES event suppresses its address, or None."""
    kind = _ses_type(raw)
    if kind == "Bounce":
        return SES_BOUNCE_TYPES.get(_text(_mapping(raw.get("bounce")).get("bounceType")))
    if kind == "Complaint":
        feedback = _text(_mapping(raw.get("complaint")).get("complaintFeedbackType"))
        return None if feedback in SES_NOT_COMPLAINTS else Reason.COMPLAINED
    return RECIPIENT_VERDICTS.get(event_type)


SUPPRESSION_RULES: dict[str, Callable[[str, Mapping], str | None]] = {
    ESP.MAILGUN: mailgun_suppression,
    ESP.SENDGRID: sendgrid_suppression,
    ESP.AMAZON_SES: ses_suppression,
}


def suppression_reason(esp: str, event_type: str, raw: Any) -> str | None:
    """Return why this event puts its address on the suppression list, or None."""
    return SUPPRESSION_RULES[esp](event_type, _mapping(raw))


# Attribution
# ------------------------------------------------------------------------------

#: Events SES reports once per message, not per recipient.
SES_PER_MESSAGE = frozenset({"opened", "clicked"})


def ses_attributable(event_type: str, raw: Mapping) -> bool:
    """Return whether an SES event belongs to its address alone."""
    # SES sends one copy to every destination and cannot tell whose pixel
    # fired; anymail reports the open for each. Only a lone destination is sure.
    if event_type not in SES_PER_MESSAGE:
        return True
    destination = _mapping(raw.get("mail")).get("destination")
    return isinstance(destination, list) and len(destination) == 1


ATTRIBUTION: dict[str, Callable[[str, Mapping], bool]] = {ESP.AMAZON_SES: ses_attributable}


def attributable(esp: str, event_type: str, raw: Any) -> bool:
    """Return whether the event may change its recipient's status."""
    rule = ATTRIBUTION.get(esp)
    return rule is None or rule(event_type, _mapping(raw))


def _ses_type(raw: Mapping) -> str:
    """Return the SES event type in either format (event publishing or notifications)."""
    return _text(raw.get("eventType") or raw.get("notificationType"))


# The payloads are the ESP's, checked by nobody before us: read them defensively.


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _first(value: Any) -> Any:
    """Return the first of a legacy Mailgun form's repeated values, or the value."""
    return value[0] if isinstance(value, list) and value else value


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}
