from django.apps import AppConfig


class BirthdayConfig(AppConfig):
    name = "birthday"
    verbose_name = "Birthdays (the lesson's demo)"
    default_auto_field = "django.db.models.BigAutoField"
