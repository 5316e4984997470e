"""Error reports (the DEBUG page, error e-mails) that never show a secret.

Django's SafeExceptionReporterFilter hides settings named like secrets, and the variables and
POST parameters that views mark with `sensitive_variables` and `sensitive_post_parameters`,
and only while DEBUG is off. The default DEBUG=1 would show the rest: a form's password in
POST data, and the decrypted SMTP password in frame locals, often under names no marker
could guess (smtplib's AUTH builds `initial_response`, "\\0user\\0password", and its base64).
"""

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

from django.template.defaultfilters import pprint
from django.views.debug import SafeExceptionReporterFilter

# Names whose string values are secrets to look for in every other variable. Narrower than
# `hidden_settings`, which also hides `key` or `auth_protocol`: their values ("name",
# "plain") are not secrets, and looking for them would hide half of every frame.
SECRET_NAMES = re.compile("PASS|SECRET|TOKEN|API_?KEY", flags=re.IGNORECASE)
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Always on, DEBUG or not. Hides POST parameters and frame locals named like secrets
    (`hidden_settings`), and any other local whose value shows, plainly, escaped or in
    base64, a secret held under such a name in the frame or its callers: as a variable, a
    dict item or an attribute (`server.password`, smtplib's `self.password`), or posted."""

    def is_active(self, request) -> bool:
        return True

    def get_cleansed_multivaluedict(self, request, multivaluedict):
        return self._cleanse_named(super().get_cleansed_multivaluedict(request, multivaluedict))

    def get_post_parameters(self, request):
        return self._cleanse_named(super().get_post_parameters(request))

    def _cleanse_named(self, parameters):
        named = [name for name in parameters if self.hidden_settings.search(name)]
        if not named:
            return parameters
        parameters = parameters.copy()
        for name in named:
            parameters[name] = self.cleansed_substitute
        return parameters

    def get_traceback_frame_variables(self, request, tb_frame):
        secrets = _Secrets(_secrets_around(tb_frame, request))
        return [
            (name, self.cleansed_substitute if self.hidden_settings.search(name) or secrets.shown_in(value) else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def _secrets_around(frame, request) -> Iterable[str]:
    """Values held under secret names by `frame` and its callers, and posted by `request`."""
    while frame is not None:
        for name, value in frame.f_locals.items():
            yield from _named_secrets([(name, value)])
            yield from _named_secrets(_items(value))
        frame = frame.f_back
    post = getattr(request, "POST", None)
    if post is not None:
        yield from _named_secrets((name, value) for name, values in post.lists() for value in values)


def _items(value) -> Iterable[tuple]:
    """A mapping's items or an object's attributes, without evaluating lazy objects:
    `type()`, unlike isinstance(), does not set up a SimpleLazyObject."""
    try:
        return list(value.items() if issubclass(type(value), Mapping) else vars(value).items())
    except Exception:  # no __dict__, or a mapping that fails: the report must still be made
        return []


def _named_secrets(items: Iterable[tuple]) -> Iterable[str]:
    for name, value in items:
        if isinstance(name, str) and SECRET_NAMES.search(name):
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and value:
                yield value


class _Secrets:
    def __init__(self, secrets: Iterable[str]):
        secrets = set(secrets)
        self.encoded = [secret.encode() for secret in secrets]
        # As they appear in a repr: as is, escaped in a str, escaped in bytes.
        self.forms = {form for s in secrets for form in (s, repr(s)[1:-1], repr(s.encode())[2:-1])}

    def shown_in(self, value) -> bool:
        if not self.forms:
            return False
        text = pprint(value)  # what the report shows
        if any(form in text for form in self.forms):
            return True
        return any(secret in decoded for decoded in _base64_runs(text) for secret in self.encoded)


def _base64_runs(text: str) -> Iterable[bytes]:
    """Every run of base64 characters decoded, from each of its first four characters, since
    a run may be glued to what came before it (the `n` of an escaped newline)."""
    for run in BASE64_RUN.findall(text):
        for start in range(4):
            encoded = run[start:].rstrip("=")
            try:
                yield base64.b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                continue
