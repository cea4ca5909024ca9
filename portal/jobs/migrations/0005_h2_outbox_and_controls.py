from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0004_h5_cpu_and_memory_use"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="sending_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="pending_action",
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name="job",
            name="pending_action_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
