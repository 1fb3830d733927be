# Index Event.message only where it is set. The full foreign-key index led
# SQLite to read every unlinked event when looking for the unlinked events of
# a few messages (event_unlinked_idx serves that lookup).
#
# The old index is dropped by name rather than by AlterField, which on SQLite
# would copy the whole events table to change one index; on PostgreSQL the new
# one is built CONCURRENTLY, so webhooks keep writing events meanwhile.

import django.db.models.deletion
from django.db import migrations, models

from transactional.migration_ops import AddIndexConcurrentlyOnPostgreSQL

OLD_INDEX = "transactional_event_message_id_03a72dab"


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("transactional", "0005_message_sent_at_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="message",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="events",
                        to="transactional.message",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{OLD_INDEX}"',
                    reverse_sql=f'CREATE INDEX "{OLD_INDEX}" ON "transactional_event" ("message_id")',
                ),
            ],
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="event",
            index=models.Index(
                condition=models.Q(("message__isnull", False)),
                fields=["message"],
                name="event_message_idx",
            ),
        ),
    ]
