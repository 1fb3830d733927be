from django.contrib import messages
from django.urls import reverse_lazy
from django.views.generic import CreateView, ListView

from .forms import BirthdayForm
from .models import Birthday


class BirthdayCreateView(CreateView):
    model = Birthday
    form_class = BirthdayForm
    success_url = reverse_lazy("birthday:list")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, f"Saved {self.object}'s birthday.")
        return response


class BirthdayListView(ListView):
    model = Birthday
    paginate_by = 50
