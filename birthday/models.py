from django.db import models


class Birthday(models.Model):
    first_name = models.CharField("first name", max_length=20)
    last_name = models.CharField("last name", max_length=20, blank=True)
    birthday = models.DateField("birthday")

    class Meta:
        ordering = ["birthday", "last_name", "first_name"]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()
