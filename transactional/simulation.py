"""Fake ESP tracking events, for seeing the whole flow in development.

``simulate()`` builds the payload the message's ESP would post, parses it
with anymail's own webhook code, and sends anymail's ``tracking`` signal as
anymail's view does; the real receivers then record it like any webhook.
Messages sent with Django's own backends (file, console, ...) get Mailgun's
shape, since their recipients carry a Message-ID as Mailgun's do.
"""

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from secrets import token_hex

from anymail.signals import AnymailTrackingEvent, tracking
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

from .models import Event, Message, Recipient, normalize_address

ESP = Event.ESP
KINDS = ("delivered", "bounced", "soft_bounced", "complained", "opened", "clicked", "unsubscribed")
USER_AGENT = "Mozilla/5.0 (simulate_event)"
CLICK_URL = "https://example.com/simulated-link"

#: Message.provider -> the ESP whose events it gets (others: Mailgun's).
ESP_OF_PROVIDER = {"mailgun": ESP.MAILGUN, "sendgrid": ESP.SENDGRID, "ses": ESP.AMAZON_SES}


class SimulationError(ValueError):
    """The event cannot be simulated for this message."""


# Payloads, in each ESP's documented shape
# ------------------------------------------------------------------------------

MAILGUN_EVENTS: dict[str, dict] = {
    "delivered": {
        "event": "delivered",
        "delivery-status": {"code": 250, "message": "OK", "description": ""},
    },
    "bounced": {
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {
            "code": 550,
            "description": "",
            "message": "5.1.1 The email account that you tried to reach does not exist.",
        },
    },
    "soft_bounced": {
        "event": "failed",
        "severity": "temporary",
        "reason": "generic",
        "delivery-status": {
            "code": 452,
            "description": "",
            "message": "4.2.2 The email account that you tried to reach is over quota.",
        },
    },
    "complained": {"event": "complained"},
    "opened": {"event": "opened", "client-info": {"user-agent": USER_AGENT}},
    "clicked": {"event": "clicked", "url": CLICK_URL, "client-info": {"user-agent": USER_AGENT}},
    "unsubscribed": {"event": "unsubscribed"},
}

SENDGRID_EVENTS: dict[str, dict] = {
    "delivered": {"event": "delivered", "response": "250 2.0.0 OK"},
    "bounced": {
        "event": "bounce",
        "type": "bounce",
        "bounce_classification": "Invalid Address",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account does not exist.",
    },
    "soft_bounced": {
        "event": "bounce",
        "type": "blocked",
        "bounce_classification": "Technical",
        "status": "4.7.0",
        "reason": "421 4.7.0 Try again later",
    },
    "complained": {"event": "spamreport"},
    "opened": {"event": "open", "useragent": USER_AGENT},
    "clicked": {"event": "click", "url": CLICK_URL, "useragent": USER_AGENT},
    "unsubscribed": {"event": "unsubscribe"},
}


def _ses_bounce(bounce_type: str, sub_type: str, status: str) -> Callable[[str, str], dict]:
    """Return a builder of an SES ``bounce`` object of this type."""
    return lambda address, now: {
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "timestamp": now,
            "feedbackId": f"simulated-{uuid.uuid4()}",
            "reportingMTA": "dsn; simulate_event",
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; {status} simulated",
                }
            ],
        }
    }


#: kind -> (SES eventType, builder of its event object from the address and time).
SES_EVENTS: dict[str, tuple[str, Callable[[str, str], dict]]] = {
    "delivered": (
        "Delivery",
        lambda address, now: {
            "delivery": {
                "timestamp": now,
                "recipients": [address],
                "smtpResponse": "250 2.6.0 Message received",
            }
        },
    ),
    "bounced": ("Bounce", _ses_bounce("Permanent", "General", "5.1.1")),
    "soft_bounced": ("Bounce", _ses_bounce("Transient", "MailboxFull", "4.2.2")),
    "complained": (
        "Complaint",
        lambda address, now: {
            "complaint": {
                "timestamp": now,
                "complainedRecipients": [{"emailAddress": address}],
                "complaintFeedbackType": "abuse",
                "feedbackId": f"simulated-{uuid.uuid4()}",
            }
        },
    ),
    "opened": ("Open", lambda address, now: {"open": {"timestamp": now, "userAgent": USER_AGENT}}),
    "clicked": (
        "Click",
        lambda address, now: {
            "click": {"timestamp": now, "userAgent": USER_AGENT, "link": CLICK_URL}
        },
    ),
}


def _mailgun(kind: str, recipient: Recipient, destination: list[str]) -> list[AnymailTrackingEvent]:
    event_data = {
        **MAILGUN_EVENTS[kind],
        "id": token_hex(11),
        "timestamp": time.time(),
        "recipient": recipient.address,
        "message": {"headers": {"message-id": recipient.esp_message_id.strip("<>")}},
    }
    signature = {"token": token_hex(25), "timestamp": str(int(time.time())), "signature": ""}
    return [
        _view(MailgunTrackingWebhookView).esp_to_anymail_event(
            {"signature": signature, "event-data": event_data}
        )
    ]


def _sendgrid(
    kind: str, recipient: Recipient, destination: list[str]
) -> list[AnymailTrackingEvent]:
    event = {
        **SENDGRID_EVENTS[kind],
        "email": recipient.address,
        "timestamp": int(time.time()),
        "sg_event_id": token_hex(16),
        "anymail_id": recipient.esp_message_id,
    }
    return [_view(SendGridTrackingWebhookView).esp_to_anymail_event(event)]


def _amazon_ses(
    kind: str, recipient: Recipient, destination: list[str]
) -> list[AnymailTrackingEvent]:
    if kind not in SES_EVENTS:
        raise SimulationError(
            f"Amazon SES has no {kind!r} event anymail understands; simulate it on a Mailgun or "
            "SendGrid message."
        )
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event_type, build = SES_EVENTS[kind]
    ses_event = {
        "eventType": event_type,
        "mail": {
            "timestamp": now,
            "messageId": recipient.esp_message_id,
            "destination": destination,
            "headers": [],
        },
        **build(recipient.address, now),
    }
    sns_message = {"MessageId": str(uuid.uuid4()), "Timestamp": now}
    return _view(AmazonSESTrackingWebhookView).esp_to_anymail_events(ses_event, sns_message)


BUILDERS: dict[str, Callable[[str, Recipient, list[str]], list[AnymailTrackingEvent]]] = {
    ESP.MAILGUN: _mailgun,
    ESP.SENDGRID: _sendgrid,
    ESP.AMAZON_SES: _amazon_ses,
}
VIEWS = {
    ESP.MAILGUN: MailgunTrackingWebhookView,
    ESP.SENDGRID: SendGridTrackingWebhookView,
    ESP.AMAZON_SES: AmazonSESTrackingWebhookView,
}


def _view(view_class: type) -> object:
    # Parsing needs only the class's tables; __init__ would read webhook
    # secrets and signing keys a development setup need not have.
    return view_class.__new__(view_class)


# Simulating
# ------------------------------------------------------------------------------


def esp_for(message: Message) -> str:
    """Return the ESP whose events ``message`` gets."""
    return ESP_OF_PROVIDER.get(message.provider, ESP.MAILGUN)


def simulate(
    message: Message, kind: str, *, address: str | None = None
) -> list[AnymailTrackingEvent]:
    """Send the tracking events the message's ESP would post for ``kind``; return them."""
    if kind not in KINDS:
        raise SimulationError(f"Unknown event {kind!r}; expected one of {', '.join(KINDS)}.")
    esp = esp_for(message)
    recipient, destination = _recipient(message, address)
    events = BUILDERS[esp](kind, recipient, destination)
    view_class = VIEWS[esp]
    for event in events:
        tracking.send(sender=view_class, event=event, esp_name=view_class.esp_name)
    return events


def _recipient(message: Message, address: str | None) -> tuple[Recipient, list[str]]:
    """Return the recipient the event is for, and every address sent alongside."""
    sent = [r for r in message.recipients.order_by("pk") if r.esp_message_id]
    if not sent:
        raise SimulationError(
            f"Message {message.pk} has no sent recipient (status {message.status}); "
            "deliver it first, so its recipients carry the ESP's message id."
        )
    if address is None:
        recipient = sent[0]
    else:
        wanted = normalize_address(address)
        recipient = next((r for r in sent if r.address == wanted), None)
        if recipient is None:
            raise SimulationError(f"Message {message.pk} was not sent to {address}.")
    destination = [r.address for r in sent if r.esp_message_id == recipient.esp_message_id]
    return recipient, destination
