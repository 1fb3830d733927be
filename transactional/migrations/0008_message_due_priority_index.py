# The due index orders by priority first. The new one is built CONCURRENTLY
# on PostgreSQL, so sends keep writing messages meanwhile, and the old one is
# dropped only once the new one exists.

from django.db import migrations, models

from transactional.migration_ops import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("transactional", "0007_providers_priority_staging"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="message",
            index=models.Index(condition=models.Q(("status__in", ["queued", "retrying"])), fields=["priority", "next_attempt_at", "id"], name="message_due_priority_idx"),
        ),
        migrations.RemoveIndex(
            model_name="message",
            name="message_due_idx",
        ),
    ]
