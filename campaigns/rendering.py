"""Turning a campaign into one email per subscriber.

`CampaignRenderer(campaign).message(subscriber, message_id)` is called for every delivery, so
all the work that does not depend on the subscriber happens once, in `__init__`: the
subject and bodies are compiled once, and when the text body is blank the HTML template
itself is converted to a text template once (see `_text_template_from_html`), instead of
converting every rendered HTML body.

Campaign templates are Django templates with their own engine (`campaigns/templating.py`):
vetted tags and filters, bounded filter arguments, no files to include, and every part bounded
in size (`CAMPAIGN_MAX_SUBJECT_BYTES`, `CAMPAIGN_MAX_BODY_BYTES`) while it renders. Their
context holds plain values, never model instances, so a template cannot call a model method.
"""

import re
from email.utils import parseaddr
from html.parser import HTMLParser

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.signing import BadSignature, Signer
from django.template import Template, TemplateSyntaxError
from django.template.base import DebugLexer, Token, TokenType
from django.urls import reverse

from campaigns.models import Campaign, Subscriber
from campaigns.templating import ENGINE, TemplateLimitExceeded, render
from smtp_settings.validators import unsafe_header_character

UNSUBSCRIBE_SALT = "relaydeck.unsubscribe"
TEST_UNSUBSCRIBE_SALT = "relaydeck.unsubscribe.test"  # a test message's link: it changes nothing

SAMPLE_SUBSCRIBER = {
    "email": "jane@example.test",
    "name": "Jane Example",
    "attributes": {"first_name": "Jane", "city": "Lisbon", "company": "Example Ltd"},
}


PART_NAMES = {"subject": "the subject", "html_body": "the HTML body", "text_body": "the text body"}


def max_bytes(part: str) -> int:
    """How large a rendered part (a key of PART_NAMES) may be, in bytes of UTF-8."""
    return settings.CAMPAIGN_MAX_SUBJECT_BYTES if part == "subject" else settings.CAMPAIGN_MAX_BODY_BYTES


class RenderError(Exception):
    """A campaign template does not compile, or failed while rendering for one subscriber
    (a filter raising on that subscriber's data, say): the message cannot be built."""


# -- unsubscribe links --


def unsubscribe_url(subscriber_id: int, campaign_id: int | None) -> str:
    """The absolute, signed, login-free unsubscribe link; it never expires."""
    return UnsubscribeLinks(campaign_id).url(subscriber_id)


class UnsubscribeLinks:
    """`unsubscribe_url` for many subscribers of one campaign: the signer and the URL around
    the token are made once (reversing the URL cost more than signing it). A token is
    letters, digits, "-", "_", ":" and ".", which reverse() leaves as they are.

    `test`: the links of a test message, which name only the campaign, under a salt of their
    own: their page says it was a test and unsubscribes nobody, whoever received it."""

    _PLACE = "PLACE"

    def __init__(self, campaign_id: int | None, test: bool = False):
        self.campaign_id = campaign_id or ""
        self.test = test
        self.signer = Signer(salt=TEST_UNSUBSCRIBE_SALT if test else UNSUBSCRIBE_SALT)
        self.before, self.after = (settings.SITE_URL + reverse("unsubscribe", args=[self._PLACE])).split(self._PLACE)

    def url(self, subscriber_id: int) -> str:
        value = str(self.campaign_id) if self.test else f"{subscriber_id}.{self.campaign_id}"
        return f"{self.before}{self.signer.sign(value)}{self.after}"


def read_unsubscribe_token(token: str) -> tuple[int, int | None]:
    """(subscriber id, campaign id or None) from a token; BadSignature if it was not ours."""
    subscriber_id, _, campaign_id = Signer(salt=UNSUBSCRIBE_SALT).unsign(token).partition(".")
    try:
        return int(subscriber_id), int(campaign_id) if campaign_id else None
    except ValueError:
        raise BadSignature("malformed unsubscribe token") from None


def read_test_unsubscribe_token(token: str) -> int | None:
    """The campaign id of a test message's unsubscribe token; BadSignature if it is not one."""
    campaign_id = Signer(salt=TEST_UNSUBSCRIBE_SALT).unsign(token)
    try:
        return int(campaign_id) if campaign_id else None
    except ValueError:
        raise BadSignature("malformed test unsubscribe token") from None


# -- templates --


# Django's hints about loading tag libraries do not apply: campaign templates cannot load any.
_NOT_HERE = re.compile(r" Did you forget to register or load this tag\?|(?<=library)\. Must be one of:.*", re.DOTALL)


def template_error(source: str, part: str) -> str | None:
    """None if `source` is a usable campaign template for `part`, else what is wrong: on which
    line, or that it renders too much.

    The template is also rendered once for a sample subscriber, which catches what fails
    whatever the data, such as a filter argument over the limits, and a part that renders
    larger than its limit; a filter failing on the sample's data (`divisibleby` on a blank
    attribute) may well work for real subscribers.
    """
    try:
        template = ENGINE.from_string(source)
    except Exception as error:
        return f"Template error on {_describe(error)}"
    context = _context(SAMPLE_SUBSCRIBER, {"name": "Sample"}, "")
    try:
        render(template, context, autoescape=part == "html_body", max_bytes=max_bytes(part))
    except TemplateLimitExceeded as error:
        name = PART_NAMES[part]
        return f"{name[0].upper()}{name[1:]} {error} for the sample subscriber."
    except TemplateSyntaxError as error:
        return f"Template error on {_describe(error)}"
    except Exception:
        return None  # it failed on the sample's data: the message says so per subscriber
    return None


def _describe(error: Exception) -> str:
    message = _NOT_HERE.sub("", str(error))
    debug = getattr(error, "template_debug", None)
    if not debug:
        return message
    line = debug["line"]
    return f"line {line}: {message.replace(f' on line {line}', '', 1)}"


def _context(subscriber: dict, campaign: dict, unsubscribe: str) -> dict:
    return {"subscriber": subscriber, "campaign": campaign, "unsubscribe_url": unsubscribe}


# -- HTML to text --

_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "dl", "table", "pre", "hr"}
_LINE = {"div", "li", "tr", "dt", "dd", "section", "article", "header", "footer", "main", "nav", "aside"}
_LINE |= {"address", "figure", "figcaption", "center", "form", "fieldset", "tbody", "thead", "tfoot", "caption"}
_HIDDEN = {"head", "title", "script", "style", "template"}
_SPACES = re.compile(r"[ \t\r\n\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextParser(HTMLParser):
    """Collects text; block boundaries become pending line breaks (1, or 2 for a blank
    line), written out only before the next text, so whitespace between blocks adds none."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.breaks = 0  # line breaks owed before the next text
        self.hidden = 0  # depth inside script, style, head…
        self.pre = 0
        self.links: list[tuple[str, int]] = []  # (href, where its text starts in parts)

    def _break(self, lines: int) -> None:
        self.breaks = max(self.breaks, lines)

    def _text(self, text: str) -> None:
        if self.breaks:
            self.parts.append("\n" * self.breaks)
            self.breaks = 0
        self.parts.append(text)

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN:
            self.hidden += 1
        if self.hidden:
            return
        if tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE:
            self._break(1)
        if tag == "br":
            self._text("\n")
        elif tag == "li":
            self._text("- ")
        elif tag in ("td", "th"):
            self._text(" ")
        elif tag == "pre":
            self.pre += 1
        elif tag == "hr":
            self._text("---")
            self._break(2)
        elif tag == "img":
            alt = _SPACES.sub(" ", dict(attrs).get("alt") or "").strip()
            if alt:
                self._text(alt)
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", len(self.parts)))

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            return
        if self.hidden:
            return
        if tag == "a" and self.links:
            self._end_link(*self.links.pop())
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE:
            self._break(1)

    def _end_link(self, href: str, start: int) -> None:
        href = href.strip()
        if not href or href.startswith(("#", "javascript:")):
            return
        text = _SPACES.sub(" ", "".join(self.parts[start:])).strip()
        if not text:
            self._text(href)
        elif text != href and text != href.removeprefix("mailto:"):
            self._text(f" ({href})")

    def handle_data(self, data):
        if self.hidden:
            return
        if self.pre:
            self._text(data.replace("\r\n", "\n"))
        elif not data.strip(" \t\r\n\f\v\xa0"):
            if not self.breaks:
                self.parts.append(" ")
        else:
            self._text(_SPACES.sub(" ", data))


def _tidy(text: str) -> str:
    """Spaces collapsed and trimmed on every line, at most one blank line in a row."""
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def html_to_text(html: str) -> str:
    """Readable plain text for an HTML document: blocks, line breaks and list items on their
    own lines, links as "text (url)", images as their alt text, scripts and styles dropped."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return _tidy("".join(parser.parts))


# The HTML template's tags and variables are replaced by markers that HTMLParser passes
# through as text, the result is converted, and the markers are put back as the original
# tokens: a text template that renders what converting each rendered HTML body would give.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_CONTROL_ONLY_LINE = re.compile(f"^((?:{_MARK_OPEN}\\d+{_MARK_CLOSE})+)\n", re.MULTILINE)


def _text_template_from_html(source: str) -> Template | None:
    """A text template equivalent to html_to_text(rendered HTML), or None if this HTML
    template cannot be converted safely (a tag in an HTML comment or attribute, say)."""
    tokens = DebugLexer(source).tokenize()
    marked: list[str] = []
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.TEXT:
            marked.append(token.contents.replace(_MARK_OPEN, "").replace(_MARK_CLOSE, ""))
        else:
            marked.append(f"{_MARK_OPEN}{index}{_MARK_CLOSE}")
    text = html_to_text("".join(marked))
    # A line holding only {% for %}, {% if %}… leaves no blank line behind when rendered.
    text = _CONTROL_ONLY_LINE.sub(
        lambda m: m.group(0) if _has_variable(m.group(1), tokens) else m.group(1),
        text,
    )
    pieces = _MARK.split(text)  # text, index, text, index, …, text
    block_order = [int(i) for i in pieces[1::2] if tokens[int(i)].token_type == TokenType.BLOCK]
    if block_order != [i for i, t in enumerate(tokens) if t.token_type == TokenType.BLOCK]:
        return None  # a tag was dropped (in a comment or a script) or repeated (in a link's URL)
    derived: list[Token] = []
    for position, piece in enumerate(pieces):
        if position % 2:
            derived.append(tokens[int(piece)])
        elif piece:
            derived.append(Token(TokenType.TEXT, piece, position=(0, 0)))
    try:
        return ENGINE.from_tokens(derived, source)  # errors point at lines of the HTML body
    except Exception:
        return None


def _has_variable(marks: str, tokens: list[Token]) -> bool:
    return any(tokens[int(i)].token_type == TokenType.VAR for i in _MARK.findall(marks))


# -- the renderer --


class CampaignRenderer:
    """Builds each subscriber's message for one campaign; templates are compiled once."""

    def __init__(self, campaign: Campaign, test: bool = False):
        """Raises RenderError if a template does not compile (forms check them, the admin does
        not). `test`: for test messages, whose unsubscribe links change nothing."""
        self.campaign_id = campaign.pk
        self.from_email = campaign.from_email
        self.reply_to = [campaign.reply_to] if campaign.reply_to else []
        self.campaign = {"name": campaign.name}
        self.unsubscribe_links = UnsubscribeLinks(campaign.pk, test=test)
        try:
            self.subject = ENGINE.from_string(campaign.subject)
            self.html = ENGINE.from_string(campaign.html_body) if campaign.html_body else None
            if campaign.text_body or not campaign.html_body:
                self.text, self.text_from_html = ENGINE.from_string(campaign.text_body), False
            else:
                self.text, self.text_from_html = _text_template_from_html(campaign.html_body), True
        except Exception as error:
            raise RenderError(_describe(error)) from error

    def message(self, subscriber: Subscriber, message_id: str) -> EmailMultiAlternatives:
        """The message to `subscriber.email`; raises RenderError if a template fails for them."""
        unsubscribe = self.unsubscribe_links.url(subscriber.pk or 0)
        subscriber_values = {"name": subscriber.name, "email": subscriber.email, "attributes": subscriber.attributes}
        context = _context(subscriber_values, self.campaign, unsubscribe)
        # Header values cannot hold line breaks; a subject is one line.
        subject = " ".join(self._render("subject", self.subject, context, autoescape=False).split())
        if character := unsafe_header_character(subject):
            raise RenderError(f"the subject contains the control character {character}")
        html = self._render("html_body", self.html, context, autoescape=True) if self.html else None
        if self.text is None:  # an HTML template that could not be converted ahead
            text = html_to_text(html)
        elif self.text_from_html:
            text = _tidy(self._render("text_body", self.text, context, autoescape=False))
        else:
            text = self._render("text_body", self.text, context, autoescape=False)
        message = EmailMultiAlternatives(
            subject,
            text,
            self.from_email,
            [subscriber.email],
            reply_to=self.reply_to,
            headers={
                "Message-ID": message_id,
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        if html is not None:
            message.attach_alternative(html, "text/html")
        return message

    @staticmethod
    def _render(part: str, template: Template, context: dict, autoescape: bool) -> str:
        try:
            return render(template, context, autoescape=autoescape, max_bytes=max_bytes(part))
        except TemplateLimitExceeded as error:
            raise RenderError(f"{PART_NAMES[part]} {error}") from error
        except Exception as error:
            raise RenderError(_describe(error)) from error


def message_domain(campaign: Campaign) -> str:
    """The domain Message-IDs of this campaign end with: its From address's."""
    return parseaddr(campaign.from_email)[1].rpartition("@")[2] or "relaydeck.invalid"


def sample_subscriber(campaign: Campaign) -> Subscriber:
    """Whom previews and test messages are rendered for: the campaign's first active
    subscriber, or an unsaved example."""
    return subscriber_to_preview(campaign.lists.all() if campaign.pk else [])[0]


def subscriber_to_preview(lists, email: str = "") -> tuple[Subscriber, str]:
    """Whom a preview of a campaign going to `lists` shows the message to: the subscriber with
    `email` on one of them (whatever their status: it is only a preview), else the first
    active subscriber of the lists, else an unsaved example; and, when `email` named nobody
    on them, a sentence that says so."""
    on_lists = Subscriber.objects.filter(lists__in=lists)
    if email and (found := on_lists.filter(email=Subscriber.normalise_email(email)).first()):
        return found, ""
    missing = f"{email} is not a subscriber of the campaign's lists." if email else ""
    first = on_lists.filter(status=Subscriber.Status.ACTIVE).order_by("pk").first()
    return first or Subscriber(**SAMPLE_SUBSCRIBER), missing
