# Counters every process adds to, summed by the metrics endpoint (transactional/metrics).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('transactional', '0010_suppression_sync'),
    ]

    operations = [
        migrations.CreateModel(
            name='MetricCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=32)),
                ('provider', models.CharField(blank=True, default='', max_length=32)),
                ('stream', models.CharField(blank=True, default='', max_length=64)),
                ('esp', models.CharField(blank=True, default='', max_length=16, verbose_name='ESP')),
                ('label', models.CharField(blank=True, default='', help_text='A message status, an event type, a bucket.', max_length=32)),
                ('day', models.DateField(help_text='UTC day of the increments; 1970-01-01: every day before the window.')),
                ('shard', models.PositiveSmallIntegerField(default=0)),
                ('value', models.BigIntegerField(default=0)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('name', 'provider', 'stream', 'esp', 'label', 'day', 'shard'), name='metric_count_unique')],
            },
        ),
    ]
