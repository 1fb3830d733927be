from django import forms
from django.core.exceptions import ValidationError

from . import beatles
from .models import Birthday

BEATLES_ERROR = "We love the Beatles too, but please enter your real name!"


class BirthdayForm(forms.ModelForm):
    class Meta:
        model = Birthday
        fields = ["first_name", "last_name", "birthday"]
        widgets = {"birthday": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")}

    def clean(self):
        cleaned_data = super().clean()
        first_name = cleaned_data.get("first_name", "")
        last_name = cleaned_data.get("last_name", "")
        if beatles.is_beatle(first_name, last_name):
            beatles.notify_admins(first_name, last_name)
            raise ValidationError(BEATLES_ERROR, code="beatle")
        return cleaned_data
