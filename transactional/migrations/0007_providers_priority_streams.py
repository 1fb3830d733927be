# Several providers (circuit breaker and rate-limit state per provider),
# message priority and stream (with database defaults, so processes of the
# previous release keep storing mail), suppression per stream, staging
# statuses, the booked delivery run. The indexes on messages come in 0008.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('transactional', '0006_event_message_partial_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='ProviderState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('provider', models.CharField(max_length=32, unique=True)),
                ('state', models.CharField(choices=[('closed', 'closed: sending'), ('open', 'open: skipped'), ('half_open', 'half-open: one probe')], default='closed', max_length=16)),
                ('failures', models.PositiveIntegerField(default=0, help_text='Transient failures in the current window.')),
                ('window_started_at', models.DateTimeField(blank=True, null=True)),
                ('opened_at', models.DateTimeField(blank=True, null=True)),
                ('retry_at', models.DateTimeField(blank=True, help_text="Open: when a probe may go. Half-open: when the probe's lease ends.", null=True)),
                ('last_error', models.TextField(blank=True)),
                ('next_slot', models.FloatField(default=0.0)),
                ('account_rate', models.FloatField(blank=True, help_text='Messages per second the provider account allows (SES MaxSendRate).', null=True)),
                ('account_rate_checked_at', models.DateTimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'provider',
                'ordering': ['provider'],
            },
        ),
        migrations.AddField(
            model_name='message',
            name='priority',
            field=models.PositiveSmallIntegerField(choices=[(0, 'high'), (1, 'normal'), (2, 'low')], db_default=1, default=1),
        ),
        migrations.AddField(
            model_name='message',
            name='stream',
            field=models.CharField(db_default='transactional', default='transactional', help_text='transactional, or a configured stream (TRANSACTIONAL_STREAMS).', max_length=64),
        ),
        migrations.AddField(
            model_name='outboxstate',
            name='wake_at',
            field=models.DateTimeField(blank=True, help_text="A delivery run is booked for then: a breaker's probe, or a booked-up rate limit.", null=True),
        ),
        migrations.AddField(
            model_name='suppression',
            name='stream',
            field=models.CharField(blank=True, db_default='', default='', help_text="Empty: every stream (a bounce, a complaint). A stream's name: only that stream (an unsubscribe from it).", max_length=64),
        ),
        migrations.AlterField(
            model_name='attempt',
            name='outcome',
            field=models.CharField(choices=[('sending', 'in progress'), ('sent', 'sent'), ('retry', 'transient failure, will retry'), ('failover', 'transient failure, tried the next provider'), ('failed', 'permanent failure'), ('suppressed', 'all recipients suppressed'), ('abandoned', 'lease expired (worker died?)')], default='sending', max_length=16),
        ),
        migrations.AlterField(
            model_name='message',
            name='provider',
            field=models.CharField(blank=True, help_text='The provider that sent it (or was tried last).', max_length=32),
        ),
        migrations.AlterField(
            model_name='message',
            name='status',
            field=models.CharField(choices=[('queued', 'queued'), ('sending', 'sending'), ('retrying', 'retrying'), ('sent', 'sent'), ('failed', 'failed'), ('suppressed', 'suppressed'), ('cancelled', 'cancelled'), ('blocked', 'blocked')], default='queued', max_length=16),
        ),
        migrations.AlterField(
            model_name='recipient',
            name='status',
            field=models.CharField(choices=[('queued', 'queued'), ('sent', 'sent'), ('deferred', 'deferred'), ('delivered', 'delivered'), ('opened', 'opened'), ('clicked', 'clicked'), ('bounced', 'bounced'), ('complained', 'complained'), ('unsubscribed', 'unsubscribed'), ('rejected', 'rejected'), ('failed', 'failed'), ('suppressed', 'suppressed'), ('redirected', 'redirected (staging)'), ('blocked', 'blocked (staging)')], default='queued', max_length=16),
        ),
        migrations.AlterField(
            model_name='suppression',
            name='address',
            field=models.CharField(max_length=320),
        ),
        migrations.AddConstraint(
            model_name='suppression',
            constraint=models.UniqueConstraint(fields=('address', 'stream'), name='suppression_unique_per_stream', violation_error_message='This address is on the suppression list for this stream already.'),
        ),
    ]
