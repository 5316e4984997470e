"""The campaign list's "Run the demo again": the same as a later `manage.py demo`."""

from django.contrib import messages
from django.http import HttpResponse
from django.views.decorators.http import require_POST

from campaigns.demo import create_demo
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required


# An admin's: it resets the sandbox server entry's limits, which only admins may change.
@role_required(Role.ADMIN)
@require_POST
def run_again(request: HtmxHttpRequest) -> HttpResponse:
    campaign = create_demo(subscribers=0)
    if campaign.status in campaign.UNDER_WAY:
        messages.error(
            request,
            f"“{campaign.name}” is {campaign.get_status_display().lower()}: cancel it (or let it finish) to run the "
            "demo again.",
        )
    else:
        messages.success(
            request,
            f"“{campaign.name}” is a fresh draft, and the sandbox server has forgotten the limits it learned: "
            "launch it to watch the pool meet the 421s again.",
        )
    return redirect_to(request, "campaigns:detail", pk=campaign.pk)
