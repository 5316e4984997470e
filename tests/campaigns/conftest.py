import pytest

SITE = "https://mail.example.test"


@pytest.fixture
def site_url(settings) -> str:
    """Unsubscribe links point at this public address."""
    settings.SITE_URL = SITE
    return SITE
