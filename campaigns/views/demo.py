"""The campaign list's "Run the demo again": the same as a later `manage.py demo`."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from campaigns.demo import create_demo, finished_runs
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required


# An admin's: it resets the sandbox server entry's limits, which only admins may change.
@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def run_again(request: HtmxHttpRequest) -> HttpResponse:
    """GET: the page that asks first (the button's, without JavaScript); POST: run it."""
    if request.method == "GET":
        return render(request, "campaigns/confirm_demo_again.html", {"runs": finished_runs()})
    demo = create_demo(subscribers=0)
    campaign = demo.campaign
    if campaign.status in campaign.UNDER_WAY:
        messages.error(
            request,
            f"“{campaign.name}” is {campaign.get_status_display().lower()}: cancel it (or let it finish) to run the "
            "demo again.",
        )
    else:
        learned = "" if demo.notes else ", and the sandbox server has forgotten the limits it learned"
        messages.success(request, f"“{campaign.name}” is a fresh draft{learned}: launch it to watch the pool.")
    for note in demo.notes:
        messages.warning(request, note)
    return redirect_to(request, "campaigns:detail", pk=campaign.pk)
