from django.shortcuts import get_object_or_404

from campaigns.models import Campaign


def get_campaign_or_404(pk: int) -> Campaign:
    return get_object_or_404(Campaign, pk=pk)
