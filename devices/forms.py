"""Forms of the device pages that are more than a field or two (healthchecks-style: the
views stay short, validation lives here)."""

from __future__ import annotations

from django import forms


class PendingMoveForm(forms.Form):
    """Staff's answer to "<device> seems to have moved to <address>". The address is the
    one the page showed: if a newer claim replaced it meanwhile, the answer does not apply
    to it (``inbox.MoveChanged``)."""

    DECISIONS = [("confirm", "It moved: follow it there"), ("dismiss", "It did not move: forget that address")]

    host = forms.CharField(max_length=253, widget=forms.HiddenInput)
    port = forms.IntegerField(min_value=1, max_value=65535, widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=DECISIONS)
