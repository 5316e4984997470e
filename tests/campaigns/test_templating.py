"""The campaign template sandbox: vetted tags and filters, bounded arguments, bounded output."""

import time
import tracemalloc

import pytest
from django.template import TemplateSyntaxError

from campaigns.models import Campaign, Delivery, Subscriber
from campaigns.rendering import CampaignRenderer, RenderError, template_error
from campaigns.templating import ENGINE, MAX_LOOP_ITERATIONS, TemplateLimitExceeded, render
from tests.campaigns.test_sending import make_campaign, start_sending

TEN = '"0123456789"'


def _render(source: str, max_bytes: int = 1000, **values) -> str:
    return render(ENGINE.from_string(source), values, autoescape=True, max_bytes=max_bytes)


@pytest.mark.parametrize(
    "source",
    [
        '{{ "x"|ljust:"500000000" }}',
        '{{ "x"|rjust:"500000000" }}',
        '{{ "x"|center:"-500000000" }}',
        '{{ 1|floatformat:"100000000" }}',
        '{{ 1|stringformat:"0500000000d" }}',
        '{{ 1|stringformat:".500000000f" }}',
    ],
)
def test_a_filter_argument_that_would_size_a_huge_output_is_a_template_error(source):
    error = template_error(source, "html_body")

    assert error.startswith("Template error on line 1: "), error
    assert "is more than campaign templates allow (1,000)" in error


def test_the_same_filters_work_within_the_bounds():
    source = '{{ "x"|ljust:"4" }}|{{ "x"|rjust:4 }}|{{ "x"|center:"5" }}|{{ 2|floatformat:3 }}|'
    source += '{{ 7|stringformat:"03d" }}'
    assert _render(source) == "x   |   x|  x  |2.000|007"


def test_join_may_not_blow_up_a_list_with_its_separator():
    with pytest.raises(TemplateSyntaxError, match="the separators would add 2,000,000 characters"):
        _render("{{ chars|join:sep }}", chars=["a"] * 1001, sep="x" * 2000)
    assert _render("{{ chars|join:', ' }}", chars=["a", "b"]) == "a, b"


@pytest.mark.parametrize("tag", ["debug", "load", "include", "extends", "block", "url", "csrf_token", "lorem"])
def test_tags_that_leak_or_reach_outside_are_not_available(tag):
    error = template_error(f"Hi\n{{% {tag} x %}}", "text_body")

    assert error == f"Template error on line 2: {{% {tag} %}} is not available in campaign templates"


def test_debug_never_reaches_a_message_even_when_saved_around_the_form():
    campaign = Campaign(pk=1, name="c", subject="Hi", from_email="a@example.test", html_body="{% debug %}")

    with pytest.raises(RenderError, match="not available in campaign templates"):
        CampaignRenderer(campaign)


def test_useful_tags_still_work():
    source = "{% for x in items %}{% cycle 'a' 'b' %}{{ x|upper }}{% if forloop.last %}!{% endif %}{% endfor %}"
    assert _render(source, items=["x", "y"]) == "aXbY!"
    assert _render("{% now 'Y' %}").isdigit()


def test_a_loop_that_would_build_a_gigabyte_stops_at_the_limit_in_bounded_memory():
    # 10**6 iterations of a 1,000-character line: a gigabyte, if it were ever built.
    loops = "".join(f"{{% for a{n} in {TEN} %}}" for n in range(6))
    source = loops + '{{ "x"|ljust:"1000" }}' + "{% endfor %}" * 6

    tracemalloc.start()
    started = time.monotonic()
    error = template_error(source, "html_body")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert error == "The HTML body is larger than 1,048,576 bytes for the sample subscriber."
    assert peak < 20 * 1024 * 1024
    assert time.monotonic() - started < 5


def test_a_chain_of_filters_in_one_tag_stops_at_the_limit_in_bounded_memory():
    # ~1 MB from join, then each urlencode triples it: twenty would make ~3 TB.
    percents = "%" * 1000
    source = f'{{{{ "%"|ljust:1000|make_list|join:"{percents}"' + "|urlencode" * 20 + " }}"

    tracemalloc.start()
    error = template_error(source, "html_body")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert error == "The HTML body is larger than 1,048,576 bytes for the sample subscriber."
    assert peak < 20 * 1024 * 1024


def test_loops_that_only_spin_are_bounded_too():
    loops = "".join(f"{{% for a{n} in {TEN} %}}" for n in range(6))
    source = loops + "{% endfor %}" * 6

    with pytest.raises(TemplateLimitExceeded, match=f"loops more than {MAX_LOOP_ITERATIONS:,} times"):
        _render(source)


def test_output_is_counted_as_bytes_of_utf8():
    assert _render("{{ s }}", max_bytes=10, s="é" * 5) == "é" * 5
    with pytest.raises(TemplateLimitExceeded, match="is larger than 10 bytes"):
        _render("{{ s }}", max_bytes=10, s="é" * 6)


def test_what_an_if_leaves_out_does_not_count():
    source = "{% for x in items %}{% if x == 'keep' %}{{ x }}{% endif %}{% endfor %}"
    assert _render(source, max_bytes=8, items=["keep", "drop" * 100, "keep"]) == "keepkeep"


@pytest.mark.parametrize(
    "field, source, label",
    [
        ("subject", "{{ subscriber.name|ljust:'999' }}", "the subject"),
        ("html_body", "{% for a in '0123456789' %}{{ subscriber.name|ljust:'1000' }}{% endfor %}", "the HTML body"),
        ("text_body", "{% for a in '0123456789' %}{{ subscriber.name|ljust:'1000' }}{% endfor %}", "the text body"),
    ],
)
def test_each_part_is_bounded_by_its_setting(settings, field, source, label):
    settings.CAMPAIGN_MAX_SUBJECT_BYTES = 998
    settings.CAMPAIGN_MAX_BODY_BYTES = 5000
    campaign = Campaign(pk=1, name="c", subject="Hi", from_email="a@example.test", html_body="<p>x</p>")
    setattr(campaign, field, source)

    with pytest.raises(RenderError, match=f"^{label} is larger than"):
        CampaignRenderer(campaign).message(Subscriber(pk=1, email="a@example.test", name="Ana"), "<m@example.test>")
    assert template_error(source, field).startswith(f"T{label[1:]} is larger than")


def test_a_subject_with_a_control_character_from_the_data_fails_that_message():
    campaign = Campaign(pk=1, name="c", subject="Hi {{ subscriber.name }}", from_email="a@example.test", html_body="x")
    renderer = CampaignRenderer(campaign)

    with pytest.raises(RenderError, match="the subject contains the control character U\\+0007"):
        renderer.message(Subscriber(pk=1, email="a@example.test", name="Ana\x07"), "<m@example.test>")
    # Line breaks in the data are folded into spaces: a subject is one line.
    message = renderer.message(Subscriber(pk=1, email="a@example.test", name="Ana\u2028Bcc: x"), "<m@example.test>")
    assert message.subject == "Hi Ana Bcc: x"


@pytest.mark.django_db(transaction=True)
def test_a_message_too_large_for_one_subscriber_fails_alone_at_send_time(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_MAX_BODY_BYTES, settings.CAMPAIGN_MAX_SUBJECT_BYTES = 150, 5000
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 3)
    Subscriber.objects.filter(email="reader1@example.test").update(name="x" * 200)  # the longest name there is

    start_sending(campaign)

    failed = Delivery.objects.get(campaign=campaign, subscriber__email="reader1@example.test")
    assert failed.status == Delivery.Status.FAILED
    assert failed.last_reply == "the template failed for them: the HTML body is larger than 150 bytes"
    assert sorted(rcpt for message in sandbox.received for rcpt in message.rcpt_tos) == [
        "reader0@example.test",
        "reader2@example.test",
    ]
