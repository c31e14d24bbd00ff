"""Drive a support fix through its page (``provision:fix``) as an agent does: open it (or post
its fields for a preview), read the preview's digest, then confirm with a reason.

For tests outside tests/console that exercise what a fix does; the fix framework's own tests
(tests/console/test_fixes.py) keep their own helpers.
"""

from __future__ import annotations

import re

from django.urls import reverse

from provision.choices import ReasonCode

DIGEST = re.compile(r'name="preview_digest" value="([0-9a-f]{64})"')


def fix_url(key: str, pk: int) -> str:
    """The page of the fix ``key`` on the target ``pk``."""
    return reverse("provision:fix", kwargs={"action": key, "pk": pk})


def fix_preview(client, key: str, pk: int, params: dict | None = None):
    """Get to the fix's preview: ``(response, digest)``; ``digest`` is "" when the page shows
    no preview (the fix does not apply, or its fields were refused)."""
    if params:
        response = client.post(fix_url(key, pk), {**params, "step": "preview"})
    else:
        response = client.get(fix_url(key, pk))
    found = DIGEST.search(response.content.decode()) if response.status_code == 200 else None
    return response, found.group(1) if found else ""


def fix_confirm(client, key: str, pk: int, digest: str, params: dict | None = None, **reason):
    """The confirming POST of a previewed fix. ``reason`` overrides the reason fields
    (``reason``, ``reason_code``, ``ticket_url``)."""
    data = {
        **(params or {}),
        "step": "confirm",
        "preview_digest": digest,
        "reason_code": ReasonCode.CUSTOMER_REQUEST,
        "reason": "Customer asked on the ticket",
        "ticket_url": "",
        **reason,
    }
    return client.post(fix_url(key, pk), data)


def run_fix(client, key: str, pk: int, params: dict | None = None, **reason):
    """Preview then confirm; fails the test when the preview is missing."""
    response, digest = fix_preview(client, key, pk, params)
    assert response.status_code == 200, response.content.decode()[:2000]
    assert digest, f"no preview on the {key} page: {response.content.decode()[:3000]}"
    return fix_confirm(client, key, pk, digest, params, **reason)
