from django import template

from campaigns.demo import can_run_again

register = template.Library()


@register.inclusion_tag("campaigns/_demo_again.html", takes_context=True)
def demo_again(context) -> dict:
    """The "Run the demo again" button, for admins, once the demo campaign has run."""
    shown = context.get("can_administer", False) and can_run_again()
    return {"shown": shown, "csrf_token": context.get("csrf_token")}
