"""Migration operations that keep a live PostgreSQL database writable."""

from django.db import migrations


class AddIndexConcurrentlyOnPostgreSQL(migrations.AddIndex):
    """AddIndex, built without blocking writes where the database can (PostgreSQL).

    The migration using it must set ``atomic = False``: CREATE INDEX
    CONCURRENTLY cannot run in a transaction.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)
