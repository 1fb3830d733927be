"""Templated mail: rendering, the HTML-to-text fallback, and sending through the outbox."""

import pytest
from django.template import TemplateDoesNotExist

from birthday.beatles import ALERT, alert_context
from birthday.mail_previews import JOHN_LENNON, BirthdayPreviews
from transactional import previews
from transactional.models import Message
from transactional.templated import html_to_text, render_templated, send_templated

TO = ["ada@example.com"]
PARTS = {"subject": "subject.txt", "text": "body.txt", "html": "body.html"}

RECEIPT_HTML = """{% extends "emails/base.html" %}
{% block preheader %}Your receipt is inside.{% endblock %}
{% block content %}
  <h1>Thanks, {{ name }}!</h1>
  <p>Your order&nbsp;#42 is on its way &mdash; track it <a href="https://shop.test/t/42">here</a>.</p>
  <ul>
    <li>Tea &amp; biscuits</li>
    <li>Jam</li>
  </ul>
  <table>
    <tr><th>Item</th><th>Price</th></tr>
    <tr><td>Tea</td><td>&euro;3</td></tr>
  </table>
  <p>Questions?<br><a href="mailto:help@shop.test">help@shop.test</a></p>
{% endblock %}
"""


@pytest.fixture
def mail_templates(settings, tmp_path):
    """Return ``write(name, subject=..., text=..., html=..., **other_files)`` in a new dir."""
    engine = settings.TEMPLATES[0]
    settings.TEMPLATES = [{**engine, "DIRS": [tmp_path, *engine["DIRS"]]}]

    def write(name: str, **files: str) -> str:
        folder = tmp_path / "emails" / name
        folder.mkdir(parents=True, exist_ok=True)
        for part, content in files.items():
            (folder / PARTS.get(part, part)).write_text(content)
        return name

    return write


def html_part(message) -> str:
    [(content, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return content


# Rendering
# ------------------------------------------------------------------------------


def test_the_subject_is_one_line_whatever_the_template_and_context(mail_templates):
    name = mail_templates("shipped", subject=" Order {{ number }}\n  has   shipped\n", text="Soon")

    message = render_templated(name, {"number": "42\r\nBcc: eve@example.com"}, to=TO)

    assert message.subject == "Order 42 Bcc: eve@example.com has shipped"
    assert message.message()["Subject"] == message.subject  # no BadHeaderError
    assert message.message()["Bcc"] is None


def test_text_parts_are_not_html_escaped_includes_neither(mail_templates):
    name = mail_templates(
        "hello",
        subject="Hi {{ name }}",
        text="Dear {{ name }},\n\n{% include 'emails/hello/signature.txt' %}\n",
        **{"signature.txt": "-- {{ name }}"},
    )

    message = render_templated(name, {"name": "Tom & Jerry <tj>"}, to=TO)

    assert message.subject == "Hi Tom & Jerry <tj>"
    assert message.body == "Dear Tom & Jerry <tj>,\n\n-- Tom & Jerry <tj>"
    assert message.alternatives == []


def test_the_html_part_is_escaped(mail_templates):
    name = mail_templates("hello", subject="Hi", text="Hi", html="<p>Dear {{ name }},</p>")

    html = html_part(render_templated(name, {"name": "Tom & Jerry <tj>"}, to=TO))

    assert "<p>Dear Tom &amp; Jerry &lt;tj&gt;,</p>" in html


def test_the_real_alert_escapes_html_only(settings):
    message = render_templated(ALERT, alert_context("Paul & Linda", "<McCartney>"), to=TO)

    assert message.body == "Paul & Linda <McCartney> tried to add a birthday."
    assert "<strong>Paul &amp; Linda &lt;McCartney&gt;</strong>" in html_part(message)


def test_html_extends_the_base_layout_with_css_inlined_and_the_style_kept():
    message = BirthdayPreviews().beatles_alert().render()
    html = html_part(message)

    assert f"<title>{message.subject}</title>" in html  # the subject reaches the layout
    assert '<table class="wrapper" role="presentation"' in html
    assert "<style>" in html and "@media only screen" in html  # kept for clients that read it
    assert '<h1 style="margin: 0 0 16px;' in html  # and inlined for those that don't
    assert 'class="footer" style="padding: 16px 32px 28px;' in html


def test_remote_stylesheets_are_not_loaded(mail_templates):
    name = mail_templates(
        "styled",
        subject="Hi",
        html='<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
        "<style>p { color: red }</style></head><body><p>Hi</p></body></html>",
    )

    html = html_part(render_templated(name, to=TO))

    assert '<p style="color: red;">Hi</p>' in html
    assert "127.0.0.1:9" not in html


def test_the_text_part_is_derived_from_the_html_without_body_txt(mail_templates):
    name = mail_templates("receipt", subject="Your receipt", html=RECEIPT_HTML)

    message = render_templated(name, {"name": "Tom & Jerry"}, to=TO)

    assert message.body == (
        "transactional\n"
        "\n"
        "Thanks, Tom & Jerry!\n"
        "\n"
        "Your order #42 is on its way \u2014 track it here (https://shop.test/t/42).\n"
        "\n"
        "- Tea & biscuits\n"
        "- Jam\n"
        "\n"
        "Item | Price\n"
        "Tea | \u20ac3\n"
        "\n"
        "Questions?\n"
        "help@shop.test\n"
        "\n"
        "This is an automated message; replies are not read."
    )
    assert "Your receipt is inside." not in message.body  # the hidden preheader
    assert html_part(message).startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a<br>b</p><p>c</p>", "a\nb\n\nc"),
        (
            "<ol><li>one</li><li>two<ul><li>nested</li></ul></li></ol>after",
            "1. one\n2. two\n  - nested\n\nafter",
        ),
        ('<a href="https://x.test">https://x.test</a>', "https://x.test"),
        ('<a href="https://x.test"><img src="logo.png" alt="Acme"></a>', "Acme (https://x.test)"),
        ('<a href="https://x.test"></a>', "https://x.test"),
        ('<a href="#top">top</a>', "top"),
        ("<p>  spread\n   over\tlines  </p>", "spread over lines"),
        ("&lt;b&gt; &amp; &quot;q&quot; &#39;s&#39; &hellip;", "<b> & \"q\" 's' \u2026"),
        ("<script>alert(1)</script><style>p{}</style>shown<span hidden>not</span>", "shown"),
        ("<pre>  keep\n    indent</pre>", "keep\n    indent"),
        ("<div>a</div>\n\n\n<div>b</div><hr>c", "a\nb\n\n" + "-" * 40 + "\n\nc"),
    ],
)
def test_html_to_text(html, text):
    assert html_to_text(html) == text


def test_a_missing_subject_is_named(mail_templates):
    mail_templates("no_subject", text="Hi")

    with pytest.raises(TemplateDoesNotExist, match="needs emails/no_subject/subject.txt: not found"):
        render_templated("no_subject", to=TO)


def test_a_missing_body_names_both_paths(mail_templates):
    mail_templates("no_body", subject="Hi")

    with pytest.raises(TemplateDoesNotExist) as raised:
        render_templated("no_body", to=TO)

    assert "emails/no_body/body.txt or emails/no_body/body.html" in str(raised.value)
    assert "subject.txt" not in str(raised.value)


def test_an_unknown_mail_names_every_missing_path():
    with pytest.raises(TemplateDoesNotExist) as raised:
        render_templated("nope/never", to=TO)

    assert str(raised.value) == (
        "Templated mail 'nope/never' needs emails/nope/never/subject.txt and "
        "emails/nope/never/body.txt or emails/nope/never/body.html: "
        "not found in any template directory."
    )


def test_a_missing_include_is_not_mistaken_for_a_missing_body(mail_templates):
    name = mail_templates("broken", subject="Hi", html="{% include 'emails/broken/gone.html' %}")

    with pytest.raises(TemplateDoesNotExist, match="^emails/broken/gone.html$"):
        render_templated(name, to=TO)


def test_unknown_message_attributes_are_refused():
    with pytest.raises(TypeError, match="Unknown message attribute\\(s\\) tag;"):
        render_templated(ALERT, alert_context(*JOHN_LENNON), to=TO, tag="typo")


# Sending
# ------------------------------------------------------------------------------


def test_send_templated_stores_anymail_and_outbox_attributes(transactional_outbox):
    sent = send_templated(
        ALERT,
        to=TO,
        cc=["cc@example.com"],
        reply_to=["help@acme.test"],
        headers={"X-Campaign": "beatles"},
        context=alert_context(*JOHN_LENNON),
        tags=["birthday"],
        metadata={"user_id": 7},
        track_clicks=False,
        idempotency_key="alert-john-lennon",
    )

    assert sent == 1
    stored = Message.objects.get()
    assert stored.subject == "Another Beatles member"
    assert stored.idempotency_key == "alert-john-lennon"
    assert stored.payload["anymail"] == {
        "tags": ["birthday"], "metadata": {"user_id": 7}, "track_clicks": False,
    }
    [mail] = transactional_outbox.assert_sent(to="cc@example.com", subject="Another Beatles member")
    assert mail.body == "John Lennon tried to add a birthday."
    assert "<strong>John Lennon</strong>" in html_part(mail)
    assert (mail.tags, mail.metadata, mail.track_clicks) == (["birthday"], {"user_id": 7}, False)
    assert (mail.reply_to, mail.extra_headers["X-Campaign"]) == (["help@acme.test"], "beatles")


def test_the_idempotency_key_stops_a_second_send(transactional_outbox):
    for _ in range(2):
        send_templated(ALERT, to=TO, context=alert_context(*JOHN_LENNON), idempotency_key="once")

    assert Message.objects.count() == 1
    transactional_outbox.assert_sent(to=TO[0], count=1)


def test_bypass_suppression_reaches_the_outbox(transactional_outbox):
    transactional_outbox.suppress(TO[0])

    send_templated(ALERT, to=TO, context=alert_context(*JOHN_LENNON), bypass_suppression=True)

    assert Message.objects.get().bypass_suppression is True
    transactional_outbox.assert_sent(to=TO[0])


def test_fail_silently_reaches_the_backend(settings, mailoutbox):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2

    sent = send_templated(ALERT, to=TO, context=alert_context(*JOHN_LENNON), fail_silently=True)

    assert sent == 0


# Every preview renders (a broken template fails the suite)
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "name"), previews.all_previews(), ids=[f"{g}.{n}" for g, n in previews.all_previews()]
)
def test_every_preview_renders(group, name):
    message = previews.get_preview(group, name).render()

    assert message.subject
    assert message.body.strip()
    assert message.message().as_bytes()  # headers and parts encode
    for content, mimetype in message.alternatives:
        assert mimetype == "text/html" and "</html>" in content
