from email.mime.text import MIMEText
from email.mime.multipart import MIMEMultipart
from hypothesis import given, settings, strategies as st, HealthCheck
from django.core.mail import EmailMessage
from tests.test_serialization import messages, round_trip, header_text, body_text

@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages())
def test_many(message):
    round_trip(message)

@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(body_text, st.lists(st.tuples(st.sampled_from(["X-A", "Content-Description", "X-Long"]), header_text.filter(lambda s: "\n" not in s and "\r" not in s)), max_size=3), st.booleans())
def test_mime_parts(text, headers, multipart):
    part = MIMEText(text, "plain", "utf-8")
    for name, value in headers:
        part[name] = value
    if multipart:
        outer = MIMEMultipart("related")
        outer.attach(part)
        outer.attach(MIMEText("<b>x</b>", "html"))
        part = outer
    message = EmailMessage("s", "b", to=["a@example.com"])
    message.attach(part)
    round_trip(message)
