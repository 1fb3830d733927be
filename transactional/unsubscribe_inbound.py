"""Unsubscribing by mail: List-Unsubscribe's mailto, through anymail's inbound webhooks.

A mail client that does not post the one-click link may send a mail to
TRANSACTIONAL_UNSUBSCRIBE_MAILTO instead, with the subject the header gave it,
``unsubscribe <token>`` (``unsubscribe.headers()``). Whichever ESP receives
it, anymail's inbound view sends the ``inbound`` signal; the receiver below
reads the token from the subject, or from the first line of the text body,
and suppresses the token's address on its stream, as the link does. The
token is the authority, not the sender: forwarding and aliases change the
From address, and a From address is easy to forge.

Mail it cannot act on (another mailbox, no token, a forged or altered token)
is logged and ignored, never raised: anymail would answer the ESP with an
error, and the ESP would post the same mail again and again. A database
error does raise, on purpose: the ESP's retry then loses nothing.

Connected by TransactionalConfig.ready().
"""

import logging
import re
from email.utils import getaddresses
from typing import Any

from anymail.inbound import AnymailInboundMessage
from anymail.signals import AnymailInboundEvent, inbound
from django.dispatch import receiver

from .conf import get_setting
from .models import Suppression, normalize_address
from .suppression import suppress
from .unsubscribe import BadToken, read_token

logger = logging.getLogger(__name__)

#: "unsubscribe <token>" anywhere in a line ("Re: ...", a "[SPAM]" tag), also
#: still percent-encoded by a client that copied the mailto's subject as is.
#: A token is Django signing's output: URL-safe base64, "." and ":".
TOKEN = re.compile(r"\bunsubscribe(?:\s+|%20)([A-Za-z0-9_.:-]+)", re.IGNORECASE)


@receiver(inbound, dispatch_uid="transactional.unsubscribe_inbound.unsubscribe_by_mail")
def unsubscribe_by_mail(
    sender: type, event: AnymailInboundEvent, esp_name: str, **kwargs: Any
) -> None:
    """Suppress the address of the token in a mail to TRANSACTIONAL_UNSUBSCRIBE_MAILTO."""
    mailbox = get_setting("UNSUBSCRIBE_MAILTO")
    message = event.message
    if not mailbox or message is None or not _addressed_to(message, mailbox):
        return
    tokens = _tokens(message)
    if not tokens:
        logger.warning(
            "Ignored a mail to %s (via %s): no 'unsubscribe <token>' in its subject or first line",
            mailbox, esp_name,
        )
        return
    for token in tokens:
        try:
            address, stream = read_token(token)
        except BadToken as error:
            logger.warning(
                "Ignored an unsubscribe token mailed to %s (via %s): %s", mailbox, esp_name, error
            )
            continue
        suppress(
            address, reason=Suppression.Reason.UNSUBSCRIBED, stream=stream,
            source="mailto", note=f"Mail to {mailbox} received via {esp_name}.",
        )
        return


def _addressed_to(message: AnymailInboundMessage, mailbox: str) -> bool:
    """Say whether the envelope, To or Cc names ``mailbox``."""
    # The stdlib's parser, not anymail's message.to: that one raises on a
    # malformed address, and a raise here would make the ESP retry forever.
    fields = [message.envelope_recipient or ""]
    fields += [*message.get_all("To", []), *message.get_all("Cc", [])]
    wanted = normalize_address(mailbox)
    addresses = getaddresses([str(field) for field in fields])
    return any(normalize_address(address) == wanted for _, address in addresses)


def _tokens(message: AnymailInboundMessage) -> list[str]:
    """Return the tokens in the subject, then in the text body's first non-blank line."""
    lines = [str(message.subject or "")]
    try:
        text = message.text or ""
    except (LookupError, ValueError):  # an unknown charset, an odd MIME structure
        text = ""
    lines += [line for line in text.splitlines() if line.strip()][:1]
    found = [match.group(1) for line in lines for match in TOKEN.finditer(line)]
    return list(dict.fromkeys(found))
