"""Turn django.core.mail messages into JSON-safe data and back, unchanged, for the outbox."""

import json
from base64 import b64decode, b64encode
from datetime import date, datetime, timedelta, timezone
from email.charset import Charset
from email.message import Message
from email.mime.base import MIMEBase
from email.parser import BytesParser
from email.policy import Compat32, compat32
from email.policy import default as default_policy
from typing import Any
from zoneinfo import ZoneInfo

from anymail.message import AnymailMessage, AnymailMessageMixin
from anymail.utils import UNSET
from django import VERSION as DJANGO_VERSION
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.message import EmailAlternative, EmailAttachment
from django.utils.functional import Promise

VERSION = 1

# Every data attribute of anymail's AnymailMessageMixin (django-anymail 15.2).
ANYMAIL_ATTRIBUTES: tuple[str, ...] = (
    "tags", "metadata", "merge_data", "merge_global_data", "merge_metadata", "merge_headers",
    "template_id", "track_opens", "track_clicks", "send_at", "esp_extra", "envelope_sender",
)

# Django 5.2 builds messages with Python's legacy email API (compat32); Django
# 6.0 with the modern one (email.policy.default). Django 6 also dropped the
# undocumented mixed_subtype and alternative_subtype attributes (a message that
# has one raises AttributeError when built), so they are stored only on 5.2.
LEGACY_EMAIL = DJANGO_VERSION < (6, 0)
#: The policy Django writes every MIME part of a message with.
PART_POLICY = compat32 if LEGACY_EMAIL else default_policy
SUBTYPE_DEFAULTS = {"mixed_subtype": "mixed", "alternative_subtype": "alternative"}
TEXT_FIELDS = ("subject", "body", "from_email", "content_subtype") + (
    ("mixed_subtype",) if LEGACY_EMAIL else ()
)
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")

# (is anymail's, has alternatives) -> the closest class deserialize() can rebuild.
CLOSEST_CLASS: dict[tuple[bool, bool], type[EmailMessage]] = {
    (False, False): EmailMessage, (False, True): EmailMultiAlternatives,
    (True, False): AnymailMessageMixin, (True, True): AnymailMessage,
}
MESSAGE_CLASSES = {cls.__name__: cls for cls in CLOSEST_CLASS.values()}


class StoredMIMEPart(MIMEBase):
    """A MIME part parsed back from the bytes serialize() stored."""

    def __init__(self, policy: Compat32 = compat32):
        Message.__init__(self, policy)  # not MIMEBase's: the bytes bring every header


class _FoldedHeader:
    """A parsed header value that the generator writes back exactly as it was folded."""

    def __init__(self, name: str, value: str, lines: list[str]):
        self.name, self.value, self.lines = name, value, lines

    def encode(self, linesep: str = "\n", **kwargs: Any) -> str:
        """Return the original lines, joined by the generator's line separator."""
        return linesep.join(self.lines)

    def fold(self, *, policy: Any) -> str:
        """Return the whole header as written, for a modern policy's generator.

        Django 6 builds messages with email.policy.default, and its generator
        lends that policy to every part it writes, ours included: that policy
        keeps an object with a ``name`` as is and asks it to fold itself.
        """
        return f"{self.name}: {self.encode(policy.linesep)}{policy.linesep}"

    def __str__(self) -> str:
        # While generating, email reads headers via plain Compat32, which relies on str().
        return self.value


class _KeepFolding(Compat32):
    """Parse headers so they read as usual but are written back unchanged."""

    # Plain Compat32 refolds parsed values: leading spaces vanish, long encoded words move.
    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, _FoldedHeader]:
        """Return the header's name and value, keeping its original lines."""
        name, value = super().header_source_parse(sourcelines)
        lines = [line.rstrip("\r\n") for line in sourcelines]
        lines[0] = lines[0][len(name) + 1 :].removeprefix(" ")
        return name, _FoldedHeader(name, value, lines)

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        """Return the header's value as Compat32 would."""
        return super().header_fetch_parse(name, getattr(value, "value", value))


def serialize(message: EmailMessage) -> dict:
    """Return JSON-safe data from which deserialize() rebuilds the message."""
    kind = isinstance(message, AnymailMessageMixin), isinstance(message, EmailMultiAlternatives)
    headers = message.extra_headers
    data: dict[str, Any] = {
        "version": VERSION,
        "class": CLOSEST_CLASS[kind].__name__,
        **{field: _text(getattr(message, field), field) for field in TEXT_FIELDS},
        **{field: [_text(a, field) for a in getattr(message, field)] for field in ADDRESS_FIELDS},
        # Pairs, not an object: order and case variants survive PostgreSQL's jsonb.
        # Django renders every header value with str(), so str() here changes nothing sent.
        "headers": [[_text(name, "header"), str(value)] for name, value in headers.items()],
        "encoding": None if message.encoding is None else str(message.encoding),
        "attachments": [_dump_attachment(attachment) for attachment in message.attachments],
        "anymail": {
            name: _dump_send_at(value) if name == "send_at" else _json_value(value, name)
            for name in ANYMAIL_ATTRIBUTES
            if (value := getattr(message, name, UNSET)) is not UNSET
        },
    }
    if isinstance(message.encoding, Charset):
        # Its encodings change the bytes: a Charset("utf-8") body goes as base64, "utf-8" as 8bit.
        data["charset"] = dict(vars(message.encoding))
    if isinstance(message, EmailMultiAlternatives):
        if LEGACY_EMAIL:
            data["alternative_subtype"] = _text(message.alternative_subtype, "alternative_subtype")
        data["alternatives"] = [
            {**_dump_content(content), "mimetype": _text(mimetype, "alternative mimetype")}
            for content, mimetype in message.alternatives
        ]
    return data


def deserialize(data: dict) -> EmailMessage:
    """Rebuild the message that serialize() turned into data."""
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError("Malformed serialized message: expected a dict with a 'version' key.")
    if data["version"] != VERSION:
        raise ValueError(f"Unknown serialized message version {data['version']!r}, not {VERSION}.")
    try:
        message = MESSAGE_CLASSES[data["class"]]()
        for field in TEXT_FIELDS:
            if field in SUBTYPE_DEFAULTS and field not in data:
                continue  # stored by Django 6: the default subtype
            setattr(message, field, _expect(data, field, str))
        if not LEGACY_EMAIL:
            _refuse_legacy_email(data)
        for field in ADDRESS_FIELDS:
            setattr(message, field, list(_expect(data, field, list)))
        message.extra_headers = {name: value for name, value in _expect(data, "headers", list)}
        message.encoding = data["encoding"]
        if "charset" in data:  # a Charset object, with its own encodings
            message.encoding = Charset(data["encoding"])
            vars(message.encoding).update(_expect(data, "charset", dict))
        message.attachments = [_load_attachment(a) for a in _expect(data, "attachments", list)]
        if "alternatives" in data:
            if LEGACY_EMAIL and "alternative_subtype" in data:
                message.alternative_subtype = _expect(data, "alternative_subtype", str)
            message.alternatives = [
                EmailAlternative(_load_content(alternative), alternative["mimetype"])
                for alternative in _expect(data, "alternatives", list)
            ]
        for name, value in _expect(data, "anymail", dict).items():
            if name not in ANYMAIL_ATTRIBUTES:
                raise ValueError(f"unknown anymail attribute {name!r}")
            setattr(message, name, _load_send_at(value) if name == "send_at" else value)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"Malformed serialized message: {exc!r}") from exc
    return message


def _refuse_legacy_email(data: dict) -> None:
    """Refuse a message stored by Django 5.2 that Django 6 cannot build as it was."""
    for field, default in SUBTYPE_DEFAULTS.items():
        if field in data and _expect(data, field, str) != default:
            raise ValueError(f"{field} {data[field]!r} needs Django 5.2 (Django 6 builds {default!r})")
    if "charset" in data:
        raise ValueError("a Charset object as encoding needs Django 5.2 (Django 6 takes a str)")


def _text(value: Any, field: str) -> str:
    """Return value as a str, evaluating lazy translations now, in the sender's language."""
    value = str(value) if isinstance(value, Promise) else value
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}: {value!r}")
    return value


def _json_value(value: Any, name: str) -> Any:
    """Return a JSON copy of value, refusing anything JSON would change or cannot hold."""
    try:
        copy = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable: {exc}") from exc
    if copy != value:
        raise ValueError(f"{name} must be JSON-serializable as is (no tuples, str keys): {value!r}")
    return copy


def _dump_send_at(value: Any) -> dict:
    """Return send_at tagged with its type, so it comes back as the same type."""
    if isinstance(value, datetime):
        stored = {"datetime": value.replace(tzinfo=None).isoformat(), "fold": value.fold}
        if isinstance(value.tzinfo, ZoneInfo) and value.tzinfo.key:
            stored["zone"] = value.tzinfo.key  # the zone itself, not just today's offset
        elif (offset := value.utcoffset()) is not None:
            stored["utcoffset"] = offset.total_seconds()
        return stored
    if isinstance(value, date):
        return {"date": value.isoformat()}
    return {"json": _json_value(value, "send_at")}


def _load_send_at(item: dict) -> Any:
    """Return the send_at value stored by _dump_send_at()."""
    if "datetime" in item:
        value = datetime.fromisoformat(item["datetime"]).replace(fold=item["fold"])
        if "zone" in item:
            return value.replace(tzinfo=ZoneInfo(item["zone"]))
        if "utcoffset" in item:
            return value.replace(tzinfo=timezone(timedelta(seconds=item["utcoffset"])))
        return value
    if "date" in item:
        return date.fromisoformat(item["date"])
    return item["json"]


def _dump_attachment(attachment: Any) -> dict:
    """Return an attachment: a MIME part's full bytes, or filename, content and mimetype."""
    if isinstance(attachment, Message):  # MIMEBase, or Django 6's email.message.MIMEPart
        # The bytes as Django writes them: its generator lends its policy to every part.
        return {"mime": b64encode(attachment.as_bytes(policy=PART_POLICY)).decode()}
    filename, content, mimetype = attachment
    filename = None if filename is None else _text(filename, "attachment filename")
    return {"filename": filename, **_dump_content(content), "mimetype": _text(mimetype, "mimetype")}


def _load_attachment(item: dict) -> MIMEBase | EmailAttachment:
    """Return the attachment stored by _dump_attachment()."""
    if "mime" in item:
        return _parse_mime(item["mime"])
    return EmailAttachment(item["filename"], _load_content(item), item["mimetype"])


def _dump_content(content: Any) -> dict:
    """Return attachment or alternative content: text, bytes, or a message/rfc822 message."""
    if isinstance(content, (str, Promise)):
        return {"content": str(content)}
    if isinstance(content, bytes):
        return {"content_base64": b64encode(content).decode()}
    if isinstance(content, EmailMessage):
        return {"content_message": serialize(content)}
    if isinstance(content, Message):
        return {"content_mime": b64encode(content.as_bytes()).decode()}
    raise ValueError(f"Attachment content must be str, bytes or a message, not {content!r}.")


def _load_content(item: dict) -> Any:
    """Return the content stored by _dump_content()."""
    if "content" in item:
        return item["content"]
    if "content_base64" in item:
        return b64decode(item["content_base64"], validate=True)
    if "content_message" in item:
        return deserialize(item["content_message"])
    return _parse_mime(item["content_mime"])


def _parse_mime(encoded: str) -> StoredMIMEPart:
    """Return the MIME part whose base64-encoded bytes are given."""
    parser = BytesParser(StoredMIMEPart, policy=_KeepFolding())
    return parser.parsebytes(b64decode(encoded, validate=True))


def _expect(data: dict, key: str, kind: type) -> Any:
    """Return data[key], checking that it is a kind."""
    if not isinstance(data[key], kind):
        raise ValueError(f"{key!r} must be a {kind.__name__}, got {type(data[key]).__name__}")
    return data[key]
