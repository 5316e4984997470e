"""The policy of a frame that shows an email's HTML part: a campaign's preview, and a message
in the sandbox inbox (each adjusts it). The part is shown as a mail client would show it, with
its inline styles and remote images, which the dashboard's own policy forbids; nothing in it
runs, and the sandbox directive holds even when the address is opened outside its frame."""

from csp.constants import NONE, SELF, UNSAFE_INLINE

MESSAGE_POLICY = {
    "default-src": [NONE],
    "style-src": [UNSAFE_INLINE],
    "img-src": ["https:", "data:"],
    "base-uri": [NONE],
    "form-action": [NONE],
    "frame-ancestors": [SELF],
    "sandbox": True,
}
