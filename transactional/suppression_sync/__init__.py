"""Sync our suppression list with the ESPs' own lists (`manage.py suppression sync`).

Pulls the Amazon SES account-level suppression list, Mailgun's bounces,
complaints and unsubscribes, and SendGrid's bounces, blocks, spam reports
and global unsubscribes, page by page, into ours: for every stream, with
source ``esp-sync`` and a note naming the ESP's list. Each page is merged in
one transaction with its ``SyncCursor``, so an interrupted run resumes at the
page it stopped on, and a second run adds nothing. ``push`` adds our
bounces, complaints and unsubscribes to the ESPs' lists that take them.
See docs/suppression-sync.md.

Modules: ``service`` (the runs, cursors and reports), ``base`` (what the
ESP clients share), and one per ESP: ``ses``, ``mailgun``, ``sendgrid``.
"""

from .base import SyncError
from .service import SOURCE, ListReport, PushReport, SyncReport, push, sync

__all__ = ["SOURCE", "ListReport", "PushReport", "SyncError", "SyncReport", "push", "sync"]
