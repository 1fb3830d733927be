# The due index orders by priority first; stats read by stream. The new
# indexes are built CONCURRENTLY on PostgreSQL, so sends keep writing messages
# meanwhile, and the old due index is dropped only once the new one exists.

from django.db import migrations, models

from transactional.migration_ops import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("transactional", "0007_providers_priority_streams"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="message",
            index=models.Index(condition=models.Q(("status__in", ["queued", "retrying"])), fields=["priority", "next_attempt_at", "id"], name="message_due_priority_idx"),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="message",
            index=models.Index(fields=["stream", "sent_at"], name="message_stream_sent_idx"),
        ),
        migrations.RemoveIndex(
            model_name="message",
            name="message_due_idx",
        ),
    ]
