"""Forms of the CRM sync staff pages."""

from provision.forms import ReasonFormMixin


class CustomerPushForm(ReasonFormMixin):
    """Staff "push now" of one customer to every CRM: the action is the URL, the form is the why."""
