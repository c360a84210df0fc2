import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def set_lock_timeout(apps, schema_editor):
    """Adding columns to the subscriber table takes a brief exclusive lock: wait for it
    at most 5 s, rather than queue every signup behind a long query."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):

    dependencies = [
        ('alerts', '0019_newsroom'),
    ]

    operations = [
        migrations.RunPython(set_lock_timeout, migrations.RunPython.noop),
        migrations.AddField(
            model_name='consentrequest',
            name='signup_page',
            field=models.URLField(blank=True, db_default='', max_length=500),
        ),
        migrations.AddField(
            model_name='consentrequest',
            name='signup_referrer',
            field=models.URLField(blank=True, db_default='', max_length=500),
        ),
        migrations.AddField(
            model_name='consentrequest',
            name='utm_campaign',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.AddField(
            model_name='consentrequest',
            name='utm_medium',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.AddField(
            model_name='consentrequest',
            name='utm_source',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.AddField(
            model_name='subscriber',
            name='signup_page',
            field=models.URLField(blank=True, db_default='', max_length=500),
        ),
        migrations.AddField(
            model_name='subscriber',
            name='signup_referrer',
            field=models.URLField(blank=True, db_default='', max_length=500),
        ),
        migrations.AddField(
            model_name='subscriber',
            name='utm_campaign',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.AddField(
            model_name='subscriber',
            name='utm_medium',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.AddField(
            model_name='subscriber',
            name='utm_source',
            field=models.CharField(blank=True, db_default='', max_length=100),
        ),
        migrations.CreateModel(
            name='OutboxEmail',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('confirmation', 'Confirmation of a consent request'), ('preferences', 'Preferences link')], max_length=20)),
                ('address', models.EmailField(max_length=254)),
                ('status', models.CharField(choices=[('pending', 'Waiting to be sent'), ('sending', 'With a worker'), ('sent', 'Handed to the provider'), ('held', 'Held back by the per-address cooldown'), ('failed', 'Refused or given up')], default='pending', max_length=10)),
                ('attempts', models.PositiveSmallIntegerField(default=0)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('next_attempt_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('lease_expires_at', models.DateTimeField(blank=True, null=True)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('message_id', models.CharField(blank=True, max_length=200)),
                ('last_error', models.CharField(blank=True, max_length=400)),
                ('request', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='outbox_emails', to='alerts.consentrequest')),
                ('subscriber', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='alerts.subscriber')),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('status__in', ['pending', 'sending'])), fields=['next_attempt_at'], name='outbox_open_due')],
            },
        ),
        migrations.RunPython(migrations.RunPython.noop, set_lock_timeout),
    ]
