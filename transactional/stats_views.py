"""The admin's delivery stats page: charts, a table and warnings from stats.py.

Mount it inside the admin site (``admin:transactional_stats``, at
``/admin/transactional/stats/``)::

    path("admin/", ([*stats_urls(admin.site), *admin.site.get_urls()], "admin", admin.site.name)),

which is what ``admin.site.urls`` returns, with our page in front.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from operator import attrgetter

from django.apps import apps
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.dateformat import format as format_date
from django.utils.safestring import SafeString
from django.views.decorators.http import require_safe

from .charts import Series, Threshold, line_chart
from .conf import streams
from .stats import GMAIL_SPAM_RATE_LIMIT, Counts, DeliveryStats, Rate, delivery_stats

TITLE = "Delivery stats"

#: The counts charted, with their colours (Okabe–Ito: told apart with colour blindness too).
COUNT_SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("sent", "Sent", "#0072b2", ""),
    ("delivered", "Delivered", "#009e73", ""),
    ("opened", "Opened", "#e69f00", "5 3"),
    ("bounced", "Bounced (hard)", "#d55e00", ""),
    ("complained", "Complained", "#cc79a7", ""),
)
#: Rate level -> the banner's CSS class (admin message styles) and what an ESP may do.
CONSEQUENCES: dict[str, tuple[str, str]] = {
    "review": ("warning", "an ESP may put the account under review"),
    "pause": ("error", "an ESP may pause the account's sending"),
}
RATE_COLOR, REVIEW_COLOR, PAUSE_COLOR, REFERENCE_COLOR = "#0072b2", "#b07d00", "#ba2121", "#767676"


def stats_urls(admin_site: AdminSite) -> list[URLPattern]:
    """Return the stats page's URL patterns, to put in front of ``admin_site.get_urls()``."""
    view = admin_site.admin_view(partial(delivery_stats_view, admin_site=admin_site))
    return [path("transactional/stats/", view, name="transactional_stats")]


@require_safe
def delivery_stats_view(request: HttpRequest, *, admin_site: AdminSite) -> TemplateResponse:
    """Show the last days' counts and rates (staff with view access to messages only)."""
    # admin_view() lets in any active staff member; the figures are about messages.
    if not request.user.has_perm("transactional.view_message"):
        raise PermissionDenied
    known = streams()
    stream = request.GET.get("stream") or None
    if stream is not None and stream not in known:
        raise Http404(f"No stream {stream!r}; the streams are {', '.join(known)}.")
    stats = delivery_stats(stream=stream)
    context = {
        "stream": stream,
        "streams": known if len(known) > 1 else (),
        **admin_site.each_context(request),
        "title": TITLE,
        "app_label": "transactional",
        "app_verbose_name": apps.get_app_config("transactional").verbose_name,
        "days": len(stats.days),
        "first_day": stats.days[0].day,
        "last_day": stats.days[-1].day,
        "stats": stats,
        "banners": banners(stats),
        "rates": [
            _rate_summary("Bounce rate", stats.bounce_rate, stats.total.bounced, "hard-bounced"),
            _rate_summary(
                "Complaint rate", stats.complaint_rate, stats.total.complained, "complained"
            ),
        ],
        "rows": [_row(day) for day in stats.days],
        "total": _row(stats.total),
        "counts_chart": counts_chart(stats.days),
        "bounce_chart": rate_chart(
            stats.days, "Bounce rate (hard bounces)", attrgetter("bounce_rate"), stats.bounce_rate
        ),
        "complaint_chart": rate_chart(
            stats.days,
            "Complaint rate",
            attrgetter("complaint_rate"),
            stats.complaint_rate,
            reference=Threshold(
                GMAIL_SPAM_RATE_LIMIT,
                f"Gmail's spam-rate limit {percent(GMAIL_SPAM_RATE_LIMIT)} "
                "(measured in Gmail Postmaster Tools, not our figure)",
                REFERENCE_COLOR,
                "2 3",
            ),
        ),
        "gmail_limit_percent": percent(GMAIL_SPAM_RATE_LIMIT),
    }
    return TemplateResponse(request, "admin/transactional/stats.html", context)


@dataclass(frozen=True)
class Banner:
    """One line in the admin's message list: ``level`` is its CSS class (warning, error)."""

    level: str
    text: str


def banners(stats: DeliveryStats) -> list[Banner]:
    """Return a warning for each rate at its review threshold, an error at its pause threshold."""
    found = []
    for name, rate in (
        ("Bounce rate", stats.bounce_rate),
        ("Complaint rate", stats.complaint_rate),
    ):
        if rate.level not in CONSEQUENCES:
            continue
        css_class, consequence = CONSEQUENCES[rate.level]
        limit = rate.pause if rate.level == "pause" else rate.review
        found.append(
            Banner(
                css_class,
                f"{name} {percent(rate.value)} over the last {len(stats.days)} days is at or above "
                f"the {rate.level} threshold of {percent(limit)}: at this level {consequence}.",
            )
        )
    return found


def counts_chart(days: list[Counts]) -> SafeString:
    """Return the chart of the daily counts."""
    return line_chart(
        _labels(days),
        [
            Series(name, [getattr(day, field) for day in days], color, dash)
            for field, name, color, dash in COUNT_SERIES
        ],
        title="Daily counts: sent, delivered, opened, bounced, complained",
        description=(
            f"Recipients per UTC day over the last {len(days)} days; "
            "the table below has the figures."
        ),
        y_format=lambda value: f"{value:,.0f}",
        min_step=1,
    )


def rate_chart(
    days: list[Counts],
    name: str,
    daily_rate: Callable[[Counts], float | None],
    rate: Rate,
    *,
    reference: Threshold | None = None,
) -> SafeString:
    """Return a chart of a daily rate with its review and pause lines (and a reference line)."""
    thresholds = [
        Threshold(rate.review, f"Review at {percent(rate.review)}", REVIEW_COLOR, "6 4"),
        Threshold(rate.pause, f"Pause at {percent(rate.pause)}", PAUSE_COLOR),
    ]
    if reference is not None:
        thresholds.append(reference)
    return line_chart(
        _labels(days),
        [Series(name, [daily_rate(day) for day in days], RATE_COLOR)],
        title=f"Daily {name.lower()}",
        description=(
            f"{name} per UTC day over the last {len(days)} days, with the thresholds as horizontal "
            "lines. Days without sends have no point; the table below has the figures."
        ),
        height=240,
        thresholds=thresholds,
        y_format=percent,
    )


def _rate_summary(name: str, rate: Rate, count: int, what: str) -> dict[str, object]:
    return {
        "name": name,
        "value": percent(rate.value),
        "level": rate.level,
        "count": count,
        "what": what,
        "review": percent(rate.review),
        "pause": percent(rate.pause),
    }


def _row(counts: Counts) -> dict[str, object]:
    return {
        "counts": counts,
        "bounce_rate": percent(counts.bounce_rate),
        "complaint_rate": percent(counts.complaint_rate),
    }


def percent(value: float | None) -> str:
    """Return a fraction as a percentage to three significant digits: 0.05 -> "5%"."""
    if value is None:
        return "–"
    if 0 < value < 0.00001:
        return "<0.001%"
    return f"{value * 100:.3g}%"


def _labels(days: list[Counts]) -> list[str]:
    return [format_date(day.day, "M j") for day in days]
