from functools import wraps

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from campaigns.models import Campaign


def get_campaign_or_404(pk: int) -> Campaign:
    return get_object_or_404(Campaign, pk=pk)


def polled_campaign(view):
    """For the blocks of a campaign's page that htmx fetches again on its own: the view gets
    the campaign, without its bodies (up to 1 MiB each, which no block shows), instead of its
    pk. Once the campaign is gone (deleted in another tab, say), htmx is sent to the campaign
    list, which says so: it swaps no 404, so the block would go on polling for ever."""

    @wraps(view)
    def with_campaign(request, pk: int):
        campaign = Campaign.objects.defer("html_body", "text_body").filter(pk=pk).first()
        if campaign is not None:
            return view(request, campaign)
        if not request.htmx:
            raise Http404("No such campaign.")
        messages.warning(request, "That campaign no longer exists: it was deleted.")
        return HttpResponseClientRedirect(reverse("campaigns:list"))

    return with_campaign
