"""Create or update Parley's periodic tasks in django-celery-beat's tables. Idempotent.

Run after every `migrate`: intervals follow the current settings, so changing e.g.
PARLEY_HEALTH_CHECK_INTERVAL and re-running this is how a deploy reschedules a job.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

PREFIX = "parley: "


def _interval(seconds: int) -> IntervalSchedule:
    schedule, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    return schedule


def _crontab(expression: str) -> CrontabSchedule:
    fields = expression.split()
    if len(fields) != 5:
        raise CommandError(f"PARLEY_USAGE_REPORT_CRON must have 5 fields, got {expression!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone="UTC",
    )
    return schedule


class Command(BaseCommand):
    help = "Create or update Parley's Celery Beat schedules (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        jobs = {
            "purge old conversations": ("chat.purge_old_conversations", _crontab("30 3 * * *")),
            "daily usage report": ("chat.build_usage_report", _crontab(settings.USAGE_REPORT_CRON)),
            "provider health check": (
                "chat.check_providers",
                _interval(settings.HEALTH_CHECK_INTERVAL),
            ),
            "reap stuck replies": ("chat.reap_stuck_replies", _interval(settings.REAPER_INTERVAL)),
        }
        with transaction.atomic():
            for label, (task, schedule) in jobs.items():
                kind = "crontab" if isinstance(schedule, CrontabSchedule) else "interval"
                other = "interval" if kind == "crontab" else "crontab"
                wanted = {"task": task, kind: schedule, other: None, "enabled": True}
                existing = PeriodicTask.objects.filter(name=PREFIX + label).first()
                if existing is None:
                    PeriodicTask.objects.create(name=PREFIX + label, **wanted)
                    outcome = "created"
                elif all(getattr(existing, field) == value for field, value in wanted.items()):
                    # Saving anyway would make Beat reload its schedule for nothing, and a
                    # deploy could not tell a change from none.
                    outcome = "unchanged"
                else:
                    for field, value in wanted.items():
                        setattr(existing, field, value)
                    existing.save()
                    outcome = "updated"
                self.stdout.write(f"{outcome}: {PREFIX}{label}")
