"""The CRM failure banner on every staff page, at a flat cost (cached for a few seconds)."""

from django.core.cache import cache
from django.utils.functional import SimpleLazyObject

from crm_sync import selectors
from provision import permissions

# Shared by every page and every worker process; a few seconds stale is fine for a banner.
FAILING_TARGETS_CACHE_KEY = "crm_sync:failing_targets"
FAILING_TARGETS_CACHE_SECONDS = 30


def failing_targets_cached() -> list[dict]:
    """``crm_sync.selectors.crm_failing_targets()``, computed at most once per 30 s."""
    failing = cache.get(FAILING_TARGETS_CACHE_KEY)
    if failing is None:
        failing = selectors.crm_failing_targets()
        cache.set(FAILING_TARGETS_CACHE_KEY, failing, FAILING_TARGETS_CACHE_SECONDS)
    return failing


def crm_sync_banner(request):
    """``crm_failing_targets``: the targets whose last runs all failed, for logged-in staff
    only (empty for anyone else). Lazy: a page that never shows the banner never asks."""
    user = getattr(request, "user", None)
    if not permissions.is_staff_member(user):
        return {"crm_failing_targets": []}
    return {
        "crm_failing_targets": SimpleLazyObject(failing_targets_cached),
        "crm_failure_banner_runs": selectors.FAILURE_BANNER_RUNS,
    }
