"""The delivery stats page: daily counts per recipient, rates, banners and SVG charts."""

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from tests.factories import make_message
from transactional.charts import Series, Threshold, line_chart
from transactional.models import Event, Message, Recipient
from transactional.stats import DAYS, Rate, delivery_stats, threshold

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls_stats")]

URL = "/admin/transactional/stats/"
SVG = "{http://www.w3.org/2000/svg}"
TODAY = date(2025, 3, 31)

# What each ESP posts, as much of it as the classification reads.
SES_HARD = {
    "eventType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General"},
}
SES_SOFT = {
    "eventType": "Bounce",
    "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull"},
}
SES_UNDETERMINED = {"eventType": "Bounce", "bounce": {"bounceType": "Undetermined"}}
SES_COMPLAINT = {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "abuse"}}
SES_NOT_SPAM = {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "not-spam"}}
SENDGRID_HARD = {"event": "bounce", "type": "bounce", "bounce_classification": "Invalid Address"}
SENDGRID_BLOCKED = {"event": "bounce", "type": "blocked", "bounce_classification": "Reputation"}
MAILGUN_HARD = {"event": "failed", "severity": "permanent", "reason": "bounce"}
MAILGUN_GAVE_UP = {"event": "failed", "severity": "permanent", "reason": "old"}


def at(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def sent(when: datetime, count: int = 1, **fields: Any) -> list[Recipient]:
    """Store a message the provider accepted at ``when``; return its recipients."""
    message = make_message(
        status=Message.Status.SENT,
        sent_at=when,
        to=[f"r{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(count)],
        recipient_status=Recipient.Status.SENT,
        **fields,
    )
    return list(message.recipients.all())


def event(
    recipient: Recipient | None,
    event_type: str,
    when: datetime | None,
    *,
    esp: str = Event.ESP.AMAZON_SES,
    raw: dict | None = None,
    **fields: Any,
) -> Event:
    """Record an ESP event for ``recipient`` (None: an event we could not link)."""
    return Event.objects.create(
        esp=esp,
        event_id=uuid.uuid4().hex,
        address=recipient.address if recipient else "stranger@example.com",
        event_type=event_type,
        timestamp=when,
        message=recipient.message if recipient else None,
        recipient=recipient,
        raw=raw if raw is not None else {},
        **fields,
    )


def day_of(stats, day: date):
    (counts,) = [counts for counts in stats.days if counts.day == day]
    return counts


# Counting
# ------------------------------------------------------------------------------


def test_window_is_the_last_30_utc_days_with_empty_days_as_zeros():
    stats = delivery_stats(today=TODAY)

    assert len(stats.days) == DAYS == 30
    assert stats.days[0].day == TODAY - timedelta(days=29)
    assert stats.days[-1].day == TODAY
    assert all(
        (c.sent, c.delivered, c.opened, c.bounced, c.soft_bounced, c.complained)
        == (0, 0, 0, 0, 0, 0)
        for c in stats.days
    )
    assert stats.bounce_rate.value is None and stats.bounce_rate.level == "none"
    assert stats.complaint_rate.value is None


def test_counts_are_distinct_recipients_per_day():
    ann, bob, cy = sent(at(TODAY - timedelta(days=2)), count=3)
    for recipient in (ann, bob, cy):
        event(recipient, "delivered", at(TODAY - timedelta(days=2), 12, 1))
    event(ann, "delivered", at(TODAY - timedelta(days=2), 12, 5))  # an ESP repeating itself
    event(ann, "opened", at(TODAY - timedelta(days=2), 13))
    event(ann, "opened", at(TODAY - timedelta(days=2), 14))
    event(bob, "opened", at(TODAY - timedelta(days=1), 9))
    event(ann, "opened", at(TODAY - timedelta(days=1), 9))

    stats = delivery_stats(today=TODAY)

    two_days_ago = day_of(stats, TODAY - timedelta(days=2))
    assert (two_days_ago.sent, two_days_ago.delivered, two_days_ago.opened) == (3, 3, 1)
    yesterday = day_of(stats, TODAY - timedelta(days=1))
    assert (yesterday.sent, yesterday.delivered, yesterday.opened) == (0, 0, 2)
    # Over the window each recipient counts once.
    assert (stats.total.sent, stats.total.delivered, stats.total.opened) == (3, 3, 2)


def test_days_are_utc_days_whatever_the_current_timezone(settings):
    settings.TIME_ZONE = "Pacific/Auckland"  # UTC+13 in March: local days differ
    day = TODAY - timedelta(days=3)
    (late,) = sent(at(day, 23, 59, 59))
    (early,) = sent(at(day + timedelta(days=1), 0, 0, 0))
    event(late, "delivered", at(day, 23, 59, 59))
    event(early, "delivered", at(day + timedelta(days=1)))

    with timezone.override("Pacific/Auckland"):
        stats = delivery_stats(today=TODAY)

    assert (day_of(stats, day).sent, day_of(stats, day).delivered) == (1, 1)
    assert (
        day_of(stats, day + timedelta(days=1)).sent,
        day_of(stats, day + timedelta(days=1)).delivered,
    ) == (1, 1)


def test_window_edges():
    first = TODAY - timedelta(days=29)
    sent(at(first) - timedelta(hours=12, seconds=1))  # 23:59:59 the day before: out
    sent(at(first, 0, 0, 0))
    sent(at(TODAY, 23, 59, 59))
    sent(at(TODAY + timedelta(days=1), 0, 0, 0))  # tomorrow: out

    stats = delivery_stats(today=TODAY)

    assert (stats.days[0].sent, stats.days[-1].sent, stats.total.sent) == (1, 1, 2)


def test_today_defaults_to_the_current_utc_day():
    sent(timezone.now())

    stats = delivery_stats()

    assert stats.days[-1].day == timezone.now().astimezone(UTC).date()
    assert stats.days[-1].sent == 1


def test_sent_leaves_out_suppressed_addresses_and_unsent_messages():
    message = make_message(
        status=Message.Status.SENT,
        sent_at=at(TODAY),
        to=["ann@example.com", "bob@example.com"],
        recipient_status=Recipient.Status.SENT,
    )
    message.recipients.filter(address="bob@example.com").update(status=Recipient.Status.SUPPRESSED)
    make_message(status=Message.Status.FAILED, to=["cy@example.com"])
    make_message(status=Message.Status.QUEUED, to=["dee@example.com"])

    assert delivery_stats(today=TODAY).days[-1].sent == 1


def test_an_event_without_a_timestamp_counts_on_the_day_it_arrived():
    (ann,) = sent(at(TODAY - timedelta(days=5)))
    event(ann, "delivered", None, received_at=at(TODAY - timedelta(days=4)))

    stats = delivery_stats(today=TODAY)

    assert day_of(stats, TODAY - timedelta(days=4)).delivered == 1


def test_events_not_linked_to_a_recipient_are_left_out():
    event(None, "delivered", at(TODAY))
    event(None, "bounced", at(TODAY), raw=SES_HARD)

    stats = delivery_stats(today=TODAY)

    assert (stats.total.delivered, stats.total.bounced) == (0, 0)


def test_only_hard_bounces_count_as_bounced():
    recipients = sent(at(TODAY), count=8)
    hard = [
        event(recipients[0], "bounced", at(TODAY), raw=SES_HARD),
        event(recipients[1], "bounced", at(TODAY), esp=Event.ESP.SENDGRID, raw=SENDGRID_HARD),
        event(recipients[2], "bounced", at(TODAY), esp=Event.ESP.MAILGUN, raw=MAILGUN_HARD),
    ]
    event(recipients[3], "bounced", at(TODAY), raw=SES_SOFT)
    event(recipients[4], "bounced", at(TODAY), raw=SES_UNDETERMINED)
    event(recipients[5], "bounced", at(TODAY), esp=Event.ESP.SENDGRID, raw=SENDGRID_BLOCKED)
    event(recipients[6], "bounced", at(TODAY), esp=Event.ESP.MAILGUN, raw=MAILGUN_GAVE_UP)
    # A temporary failure the ESP is still retrying: not a bounce of either kind.
    event(
        recipients[7], "deferred", at(TODAY), esp=Event.ESP.MAILGUN, raw={"severity": "temporary"}
    )

    today = delivery_stats(today=TODAY).days[-1]

    assert (today.sent, today.bounced, today.soft_bounced) == (8, len(hard), 4)
    assert today.bounce_rate == pytest.approx(3 / 8)


def test_complaints_leave_out_not_spam_feedback():
    ann, bob, cy = sent(at(TODAY), count=3)
    event(ann, "complained", at(TODAY), raw=SES_COMPLAINT)
    event(bob, "complained", at(TODAY), esp=Event.ESP.SENDGRID, raw={"event": "spamreport"})
    event(cy, "complained", at(TODAY), raw=SES_NOT_SPAM)

    assert delivery_stats(today=TODAY).days[-1].complained == 2


def test_rates_are_over_the_window_counting_each_recipient_once():
    recipients = sent(at(TODAY - timedelta(days=10)), count=40)
    sent(at(TODAY - timedelta(days=2)), count=60)
    # The same hard bounce reported on two days (two ESP notifications).
    event(recipients[0], "bounced", at(TODAY - timedelta(days=10)), raw=SES_HARD)
    event(recipients[0], "bounced", at(TODAY - timedelta(days=9)), raw=SES_HARD)
    event(recipients[1], "complained", at(TODAY - timedelta(days=3)), raw=SES_COMPLAINT)

    stats = delivery_stats(today=TODAY)

    assert stats.total.sent == 100
    assert stats.total.bounced == 1
    assert stats.bounce_rate.value == pytest.approx(0.01)
    assert stats.complaint_rate.value == pytest.approx(0.01)
    assert (stats.bounce_rate.level, stats.complaint_rate.level) == ("ok", "pause")


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, "none"),
        (0.0, "ok"),
        (0.0499, "ok"),
        (0.05, "review"),
        (0.0999, "review"),
        (0.10, "pause"),
    ],
)
def test_rate_levels(value, level):
    assert Rate(value, review=0.05, pause=0.10).level == level


def test_thresholds_default_to_ses_levels_and_come_from_settings(settings):
    assert [threshold(n) for n in ("BOUNCE_RATE_REVIEW", "BOUNCE_RATE_PAUSE")] == [0.05, 0.10]
    assert [threshold(n) for n in ("COMPLAINT_RATE_REVIEW", "COMPLAINT_RATE_PAUSE")] == [
        0.001,
        0.005,
    ]

    settings.TRANSACTIONAL_BOUNCE_RATE_REVIEW = 0.02

    assert threshold("BOUNCE_RATE_REVIEW") == 0.02
    assert delivery_stats(today=TODAY).bounce_rate.review == 0.02


def test_queries_stay_few_however_many_days_have_data(django_assert_max_num_queries):
    for offset in range(0, 30, 3):
        recipients = sent(at(TODAY - timedelta(days=offset)), count=3)
        event(recipients[0], "delivered", at(TODAY - timedelta(days=offset)))
        event(recipients[1], "opened", at(TODAY - timedelta(days=offset)))
        event(recipients[2], "bounced", at(TODAY - timedelta(days=offset)), raw=SES_HARD)

    with django_assert_max_num_queries(4):
        stats = delivery_stats(today=TODAY)

    assert stats.total.sent == 30 and stats.total.bounced == 10


# The page
# ------------------------------------------------------------------------------


def page(client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def svgs(html: str) -> list[ET.Element]:
    """Parse every inline SVG in the page (raises if one is not well-formed XML)."""
    return [
        ET.fromstring(match)
        for match in re.findall(r"<svg [^>]*class=\"chart\".*?</svg>", html, flags=re.DOTALL)
    ]


def banners(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<li class="(warning|error)">([^<]*)</li>', html)


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_users_who_are_not_staff_are_sent_to_the_login_page(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("ann", is_staff=False))

    assert client.get(URL).status_code == 302


def test_staff_need_view_access_to_messages(client, django_user_model):
    user = django_user_model.objects.create_user("bob", is_staff=True)
    client.force_login(user)
    assert client.get(URL).status_code == 403

    user.user_permissions.add(Permission.objects.get(codename="view_message"))

    assert client.get(URL).status_code == 200


def test_page_has_breadcrumbs_charts_and_a_table(admin_client):
    ann, _ = sent(timezone.now(), count=2)
    event(ann, "delivered", timezone.now())

    html = page(admin_client)

    assert '<a href="/admin/">Home</a>' in html
    assert '<a href="/admin/transactional/">Transactional email</a>' in html
    assert "<title>Delivery stats | " in html
    charts = svgs(html)
    assert len(charts) == 3
    for chart in charts:
        assert chart.get("role") == "img"
        title_id, desc_id = chart.get("aria-labelledby").split()
        assert chart.find(f"{SVG}title").get("id") == title_id
        assert chart.find(f"{SVG}desc").get("id") == desc_id
    legend = [t.text for t in charts[0].iter(f"{SVG}text") if t.text in {"Sent", "Delivered"}]
    assert legend == ["Sent", "Delivered"]
    assert "UTC" in html
    body = re.search(r"<tbody>(.*?)</tbody>", html, flags=re.DOTALL).group(1)
    assert body.count("<tr>") == DAYS
    today = timezone.now().astimezone(UTC).date().isoformat()
    assert re.search(rf'<time datetime="{today}">[^<]*</time></th>\s*<td>2</td>\s*<td>1</td>', body)


def test_no_banner_below_the_thresholds(admin_client):
    sent(timezone.now(), count=100)

    assert banners(page(admin_client)) == []


def test_a_warning_at_the_review_threshold(admin_client):
    recipients = sent(timezone.now(), count=20)
    event(recipients[0], "bounced", timezone.now(), raw=SES_HARD)  # 5%

    (banner,) = banners(page(admin_client))

    assert banner[0] == "warning"
    assert banner[1].startswith(
        "Bounce rate 5% over the last 30 days is at or above the review threshold of 5%"
    )
    assert "under review" in banner[1]


def test_an_error_at_the_pause_threshold(admin_client):
    recipients = sent(timezone.now(), count=20)
    for recipient in recipients[:2]:
        event(recipient, "bounced", timezone.now(), raw=SES_HARD)  # 10%

    (banner,) = banners(page(admin_client))

    assert banner[0] == "error"
    assert banner[1].startswith(
        "Bounce rate 10% over the last 30 days is at or above the pause threshold of 10%"
    )
    assert "pause" in banner[1]


def test_complaint_thresholds_follow_settings(admin_client, settings):
    settings.TRANSACTIONAL_COMPLAINT_RATE_PAUSE = 0.10
    recipients = sent(timezone.now(), count=20)
    event(recipients[0], "complained", timezone.now(), raw=SES_COMPLAINT)  # 5%

    (banner,) = banners(page(admin_client))

    assert banner == ("warning", banner[1])
    assert banner[1].startswith(
        "Complaint rate 5% over the last 30 days is at or above the review threshold of 0.1%"
    )


def test_gmail_limit_is_a_labelled_reference_line_on_the_complaint_chart(admin_client):
    _, bounce_chart, complaint_chart = svgs(page(admin_client))

    gmail_label = (
        "Gmail's spam-rate limit 0.3% (measured in Gmail Postmaster Tools, not our figure)"
    )
    lines = {
        g.get("aria-label")
        for g in complaint_chart.iter(f"{SVG}g")
        if g.get("class") == "chart-threshold"
    }
    assert lines == {
        "Review at 0.1%",
        "Pause at 0.5%",
        gmail_label,
    }
    assert gmail_label in [
        text.text for text in complaint_chart.iter(f"{SVG}text")
    ]  # in the legend
    assert not any("Gmail" in (text.text or "") for text in bounce_chart.iter(f"{SVG}text"))


def test_page_queries_are_bounded(admin_client, django_assert_max_num_queries):
    for offset in range(10):
        recipients = sent(timezone.now() - timedelta(days=offset), count=2)
        event(recipients[0], "delivered", timezone.now() - timedelta(days=offset))
        event(recipients[1], "bounced", timezone.now() - timedelta(days=offset), raw=SES_SOFT)

    with django_assert_max_num_queries(8):
        page(admin_client)


# Charts
# ------------------------------------------------------------------------------


def test_chart_text_is_escaped():
    evil = '<script>alert("x")</script> & more'
    svg = line_chart(
        [evil, "b"],
        [Series(evil, [1, 2], '"red" onload="x"')],
        title=evil,
        description=evil,
        thresholds=[Threshold(1.5, evil, "blue")],
    )

    root = ET.fromstring(svg)

    assert "<script" not in svg
    assert root.find(f"{SVG}title").text == evil
    assert evil in [t.text for t in root.iter(f"{SVG}text")]  # the legend
    assert root.find(f".//{SVG}polyline").get("stroke") == '"red" onload="x"'


def test_no_data_breaks_the_line_and_labels_count_back_from_the_newest():
    labels = [f"d{i}" for i in range(12)]
    values = [1.0] * 5 + [None] + [2.0] * 6

    root = ET.fromstring(line_chart(labels, [Series("s", values, "red")], title="t"))

    assert len(root.findall(f".//{SVG}polyline")) == 2
    assert len(root.findall(f".//{SVG}circle")) == 11
    shown = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("d")]
    assert shown == ["d1", "d6", "d11"]


def test_an_all_zero_or_empty_chart_is_still_well_formed():
    ET.fromstring(line_chart(["a", "b"], [Series("s", [0, 0], "red")], title="zeros"))
    ET.fromstring(line_chart(["a"], [Series("s", [None], "red")], title="nothing"))


# Streams
# ------------------------------------------------------------------------------


def test_stats_for_one_stream_count_only_its_mail():
    [receipt] = sent(at(TODAY), stream="transactional")
    news = sent(at(TODAY), count=3, stream="newsletter")
    event(receipt, "delivered", at(TODAY, 13))
    event(news[0], "complained", at(TODAY, 14), raw={"complaint": {"complaintFeedbackType": "abuse"}})

    everything = delivery_stats(today=TODAY)
    newsletter = delivery_stats(today=TODAY, stream="newsletter")
    transactional = delivery_stats(today=TODAY, stream="transactional")

    assert (everything.total.sent, everything.total.delivered, everything.total.complained) == (4, 1, 1)
    assert (newsletter.total.sent, newsletter.total.delivered, newsletter.total.complained) == (3, 0, 1)
    assert (transactional.total.sent, transactional.total.delivered, transactional.total.complained) == (1, 1, 0)


def test_the_page_switches_stream_and_refuses_an_unknown_one(admin_client, settings):
    from django.urls import reverse

    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    sent(timezone.now(), count=2, stream="newsletter")
    page = reverse("admin:transactional_stats")

    everything = admin_client.get(page)
    newsletter = admin_client.get(page, {"stream": "newsletter"})

    assert 'href="?stream=newsletter"' in everything.content.decode()
    assert "Mail on the <strong>newsletter</strong> stream only." in newsletter.content.decode()
    assert newsletter.context["stats"].total.sent == 2
    assert admin_client.get(page, {"stream": "transactional"}).context["stats"].total.sent == 0
    assert admin_client.get(page, {"stream": "<script>"}).status_code == 404
