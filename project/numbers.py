"""Numbers with bounds, and one message for any value outside them.

A model field takes its bounds as `validators=whole_number(1, 1000)` (or `number(0, 100)`,
or an `AtLeast`/`AtMost` of its own with the message its help calls for), and every
ModelForm names `form_number_field` as its `formfield_callback`: the form field then takes
the same bounds (the browser's min and max too) and says the same thing, "Enter a whole
number from 1 to 1,000.", for a value below, above or not a number at all, as the field's
help does. Otherwise Django says "≥ 0" for -3 (the form's PositiveIntegerField bound) and
"≥ 1" for 0 (the model's), neither of which is what the help promised.
"""

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class AtLeast(MinValueValidator):
    """A lower bound whose message a form field repeats (see form_number_field)."""


class AtMost(MaxValueValidator):
    """An upper bound whose message a form field repeats (see form_number_field)."""


def _bounds(low, high, what: str) -> list:
    message = f"Enter {what} from {low:,} to {high:,}."
    return [AtLeast(low, message=message), AtMost(high, message=message)]


def whole_number(low: int, high: int) -> list:
    """Validators of an integer field from `low` to `high`, inclusive."""
    return _bounds(low, high, "a whole number")


def number(low: float, high: float) -> list:
    """Validators of a decimal (float) field from `low` to `high`, inclusive."""
    return _bounds(low, high, "a number")


def form_number_field(model_field: models.Field, **kwargs) -> forms.Field | None:
    """A ModelForm's `formfield_callback`: a number field bounded by the model field's
    AtLeast and AtMost, any value outside them (or not a number) getting their message; any
    other field as Django makes it."""
    bounds = {
        "min_value": next((v for v in model_field.validators if isinstance(v, AtLeast)), None),
        "max_value": next((v for v in model_field.validators if isinstance(v, AtMost)), None),
    }
    if any(bounds.values()):
        message = next(v.message for v in bounds.values() if v is not None)
        kwargs = {name: v.limit_value for name, v in bounds.items() if v is not None} | kwargs
        kwargs["error_messages"] = {"min_value": message, "max_value": message, "invalid": message}
    return model_field.formfield(**kwargs)
