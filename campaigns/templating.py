"""The template language of campaigns: Django's, cut down to what a message needs, and bounded.

Campaign templates are written in the dashboard and rendered for every subscriber, in the web
process (the compose form renders a sample) and in the workers. So:

- Only vetted tags and filters exist. `debug` (it dumps the context and every loaded module),
  `load`, `include`, `extends` and `block` (no library or file to reach), `url`, `querystring`
  and `csrf_token` (they belong to pages) and `lorem` (any amount of text) say that they are not
  available; `pprint`, a debugging aid, is left out.
- Filter arguments that size their output are bounded: the width of `ljust`, `rjust` and
  `center`, the digits of `floatformat`, the numbers in a `stringformat` specifier, and what
  `join`'s separators add.
- `render()` keeps a budget: every node's output is counted as it is made, so a loop stops
  the render as soon as the part grows past its limit, not after it has filled the memory;
  and loops may run only so many times in all.
"""

import re
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial, wraps

from django.template import Context, Engine, Library, Template, TemplateSyntaxError, defaultfilters, defaulttags
from django.template.base import Node, Parser, Token
from django.template.defaulttags import ForNode

MAX_FILTER_ARGUMENT = 1000  # widths, digits, the numbers in a format specifier
MAX_JOIN_SEPARATORS = 1_000_000  # characters a join's separators may add
MAX_LOOP_ITERATIONS = 100_000  # in all the loops of one render

TAGS = [
    "autoescape",
    "comment",
    "cycle",
    "filter",
    "firstof",
    "for",
    "if",
    "ifchanged",
    "now",
    "regroup",
    "resetcycle",
    "spaceless",
    "templatetag",
    "verbatim",
    "widthratio",
    "with",
]
UNAVAILABLE_TAGS = ["block", "csrf_token", "debug", "extends", "include", "load", "lorem", "querystring", "url"]
FILTERS = [
    "add",
    "addslashes",
    "capfirst",
    "center",
    "cut",
    "date",
    "default",
    "default_if_none",
    "dictsort",
    "dictsortreversed",
    "divisibleby",
    "escape",
    "escapejs",
    "escapeseq",
    "filesizeformat",
    "first",
    "floatformat",
    "force_escape",
    "get_digit",
    "iriencode",
    "join",
    "json_script",
    "last",
    "length",
    "linebreaks",
    "linebreaksbr",
    "linenumbers",
    "ljust",
    "lower",
    "make_list",
    "phone2numeric",
    "pluralize",
    "random",
    "rjust",
    "safe",
    "safeseq",
    "slice",
    "slugify",
    "stringformat",
    "striptags",
    "time",
    "timesince",
    "timeuntil",
    "title",
    "truncatechars",
    "truncatechars_html",
    "truncatewords",
    "truncatewords_html",
    "unordered_list",
    "upper",
    "urlencode",
    "urlize",
    "urlizetrunc",
    "wordcount",
    "wordwrap",
    "yesno",
]


class TemplateLimitExceeded(Exception):
    """A render grew past its size limit or looped too often; the message says which, to
    follow the name of the part ("the HTML body " + message)."""


# -- bounded filter arguments --


def _check_number(name: str, number: int) -> None:
    if abs(number) > MAX_FILTER_ARGUMENT:
        raise TemplateSyntaxError(f"{name}: {number} is more than campaign templates allow ({MAX_FILTER_ARGUMENT:,})")


def _width(name: str, value, arg) -> None:
    try:
        number = int(arg)
    except (TypeError, ValueError):
        return  # the filter itself says what is wrong with it
    _check_number(name, number)


def _numbers_in(name: str, value, arg) -> None:
    for digits in re.findall(r"\d+", str(arg)):
        _check_number(name, int(digits))


def _separators(name: str, value, arg) -> None:
    try:
        added = len(str(arg)) * (len(value) - 1)
    except TypeError:
        return
    if added > MAX_JOIN_SEPARATORS:
        raise TemplateSyntaxError(f"{name}: the separators would add {added:,} characters")


_ARGUMENT_CHECKS = {
    "ljust": _width,
    "rjust": _width,
    "center": _width,
    "floatformat": _numbers_in,
    "stringformat": _numbers_in,
    "join": _separators,
}


def _bounded(name: str, filter_func):
    """`filter_func` with its argument checked (if it sizes the output) and its result counted
    against the render's budget: a chain of filters in one {{ }} (each urlencode triples what
    it is given) must stop at the limit, not when the node is done."""
    check = _ARGUMENT_CHECKS.get(name)

    @wraps(filter_func)  # its flags (is_safe…) come along, and the parser reads its signature
    def bounded(value, *args, **kwargs):
        if check is not None and args:
            check(name, value, args[0])
        result = filter_func(value, *args, **kwargs)
        budget = _render_budget.get()
        if budget is not None and isinstance(result, str | list) and budget.chars + len(result) > budget.max_chars:
            raise TemplateLimitExceeded(f"is larger than {budget.max_chars:,} bytes")
        return result

    return bounded


def _unavailable(parser: Parser, token: Token):
    name = token.split_contents()[0]
    raise TemplateSyntaxError(f"{{% {name} %}} is not available in campaign templates")


def _vetted_library() -> Library:
    library = Library()
    for name in TAGS:
        library.tag(name, defaulttags.register.tags[name])
    for name in UNAVAILABLE_TAGS:
        library.tag(name, _unavailable)
    for name in FILTERS:
        filter_func = defaultfilters.register.filters[name]
        library.filter(name, _bounded(name, filter_func))
    return library


# -- the output and loop budget --


@dataclass
class _Budget:
    max_chars: int
    chars: int = 0  # the output made so far that is still part of the result
    iterations: int = 0


# The budget of the render under way in this thread, for filters, which see no context.
_render_budget: ContextVar[_Budget | None] = ContextVar("campaign_render_budget", default=None)


def _counted_render(render_annotated, context: Context) -> str:
    budget = context.budget
    before = budget.chars
    output = render_annotated(context)
    # What this node's children counted is now inside its output, or dropped (an {% if %}
    # not taken, a {% filter %} that shortened it): the node's output replaces their count.
    budget.chars = before + len(output)
    if budget.chars > budget.max_chars:
        raise TemplateLimitExceeded(f"is larger than {budget.max_chars:,} bytes")
    return output


class _CountedSequence:
    """A for loop's sequence, whose items count against the render's loop budget."""

    def __init__(self, expression):
        self.expression = expression

    def resolve(self, context: Context, ignore_failures: bool = False):
        values = self.expression.resolve(context, ignore_failures)
        budget = context.budget
        budget.iterations += len(values) if hasattr(values, "__len__") else 0
        if budget.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateLimitExceeded(f"loops more than {MAX_LOOP_ITERATIONS:,} times")
        return values


def _with_budget(template: Template) -> Template:
    """Make every node of `template` count its output against the render's budget, and every
    loop its iterations. (A TextNode never calls its `render`, hence `render_annotated`.)"""
    for node in template.nodelist.get_nodes_by_type(Node):
        node.render_annotated = partial(_counted_render, node.render_annotated)
        if isinstance(node, ForNode):
            node.sequence = _CountedSequence(node.sequence)
    return template


class _CampaignEngine(Engine):
    def __init__(self):
        # No loaders: nothing on the server can be included. debug=True: errors carry a line.
        super().__init__(debug=True, loaders=[], autoescape=True)
        self.template_builtins = [_vetted_library()]

    def from_string(self, template_code: str) -> Template:
        return _with_budget(super().from_string(template_code))

    def from_tokens(self, tokens: list[Token], source: str) -> Template:
        """A template of tokens lexed (with DebugLexer) from `source`, and maybe rearranged:
        its errors point at lines of `source`."""
        template = Template("", engine=self)
        template.source = source
        template.nodelist = Parser(tokens, self.template_libraries, self.template_builtins, template.origin).parse()
        return _with_budget(template)


ENGINE = _CampaignEngine()


def render(template: Template, values: dict, *, autoescape: bool, max_bytes: int) -> str:
    """`template` rendered with `values`; TemplateLimitExceeded if the result would be larger
    than `max_bytes` of UTF-8 or its loops run more than MAX_LOOP_ITERATIONS times."""
    context = Context(values, autoescape=autoescape)
    # Counted in characters while rendering (never more than the bytes), exactly at the end.
    context.budget = _Budget(max_chars=max_bytes)
    token = _render_budget.set(context.budget)
    try:
        output = template.render(context)
    finally:
        _render_budget.reset(token)
    if len(output.encode()) > max_bytes:
        raise TemplateLimitExceeded(f"is larger than {max_bytes:,} bytes")
    return output
