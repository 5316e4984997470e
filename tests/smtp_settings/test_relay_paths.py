"""The relay reads MAIL and RCPT paths with a pattern first, for speed: it must read every one
as aiosmtpd's own parser does."""

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtp_settings.relay.server import _RelaySMTP

ATOM = st.text("abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
LABEL = st.text("abz09-", min_size=1, max_size=6)
ANYTHING = st.text('<>@.aZ0 \t()"[]:,;!#-_=+\\\r\né\x0b\x1c\x85\u2028', max_size=30)


def paths():
    """Mostly <dot-atom@domain> with parameters after it, with odd characters mixed in."""
    local = st.lists(ATOM, min_size=1, max_size=3).map(".".join) | ANYTHING
    domain = st.lists(LABEL, min_size=1, max_size=3).map(".".join) | ANYTHING
    after = st.sampled_from(["", " SIZE=100", "  BODY=8BITMIME", "\t x", " (comment)", " ", "x", ".", "\n"]) | ANYTHING
    return st.builds(lambda *parts: "<{}@{}>{}".format(*parts), local, domain, after) | ANYTHING


def read(session_class, arg: str, local_part_limit: int):
    """What a session makes of `arg`: (address, rest), or the exception it raises (aiosmtpd's
    parser fails on a few inputs, such as a lone "<")."""
    session = session_class.__new__(session_class)
    session.local_part_limit = local_part_limit
    try:
        return session._getaddr(arg)
    except Exception as error:
        return type(error)


@settings(max_examples=5000)
@given(paths(), st.sampled_from([0, 3, 64]))
@example("<app@example.test>", 0)
@example("<app@example.test> SIZE=2000 BODY=8BITMIME", 0)
@example("<a@b.c.>", 0)
@example("<a@b> (a comment) SIZE=1", 0)
@example("<abcd@b>", 3)
@example("<a@b>\n", 0)
@example("<0@0>\t\r", 0)
def test_a_path_reads_as_aiosmtpd_reads_it(arg, local_part_limit):
    assert read(_RelaySMTP, arg, local_part_limit) == read(SMTP, arg, local_part_limit)
