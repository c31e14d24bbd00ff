"""The seat utilization cockpit at design scale, against a single primary-key lookup page in the
same run. Run with ``pytest -m benchmark -s tests/benchmarks/test_cockpit.py``.

It runs against the ``seed_scale`` database (``COCKPIT_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/provision_scale``: 200,000 customers in books of 1,000 per
account manager, 300,000 subscriptions, 100,000 of them with daily rollups), migrated first, in
a subprocess. ``seed_scale --days 3`` leaves three days of rollups; the run adds
``COCKPIT_BENCH_HISTORY_DAYS`` (87) more per subscription, written day after day as the
rollup task writes them (so one subscription's rows are spread over the table, as in
production), then ANALYZE: ~7 million rows, **inside a transaction it rolls back at the end**.
On a copy of the scale database that already holds the history (committed and vacuumed), set
``COCKPIT_BENCH_HISTORY_DAYS=0``; ``COCKPIT_BENCH_COVERING_INDEX=1`` then adds, in the same
rolled-back transaction, a candidate index for the models: (subscription, date) including
billable and max users, which makes the rollup reads index-only scans.

Timed, each a full ``GET`` through Django's test client (middleware, session, the view, the
template or serializer; not the network), ``COCKPIT_BENCH_REQUESTS`` (30) times after a
warm-up:

- baseline: a page that looks up one customer by primary key and renders it in the console
  layout (the floor every console page pays);
- the cockpit, an account manager's book (1,000 customers): first page, sorted by
  utilization, filtered to over seats, filtered by a utilization range;
- the cockpit, a support lead (every customer with an active subscription, ~188,000): first
  page, over seats, sorted by utilization (a figure of every customer: the expensive case);
- ``/api/cockpit/``: the book, and a lead's first page;
- the CSV export of 10,000 rows (a renewal window chosen to hold 10,000 customers), by name
  and by utilization: total time and rows a second, a few runs;
- the per-customer cockpit page for representative customers (most subscriptions, GitLab.com,
  self-managed with usage).

Printed per page: p50 / p95 / max ms, p95 over the baseline's p95, and the most queries one
request took. The targets (p95 ≤ 100 ms, ≤ 15 queries a page) are reported, not asserted.
"""

from __future__ import annotations

import os

import pytest

from tests.benchmarks.scale import DATABASE_URL as SCALE_DATABASE_URL
from tests.benchmarks.scale import require_scale_database, run_bench_script

pytestmark = pytest.mark.benchmark

DATABASE_URL = os.environ.get("COCKPIT_BENCH_DATABASE_URL", SCALE_DATABASE_URL)
REQUESTS = int(os.environ.get("COCKPIT_BENCH_REQUESTS", "30"))
HISTORY_DAYS = int(os.environ.get("COCKPIT_BENCH_HISTORY_DAYS", "87"))
CSV_RUNS = int(os.environ.get("COCKPIT_BENCH_CSV_RUNS", "3"))
COVERING_INDEX = int(os.environ.get("COCKPIT_BENCH_COVERING_INDEX", "0"))

BENCH_SCRIPT = r"""
import json, statistics, sys, time, types, uuid
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.shortcuts import get_object_or_404
from django.template import engines
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path
from django.utils import timezone
from provision import permissions, urls as project_urls
from provision.choices import Deployment, Role, SubscriptionStatus
from provision.decorators import role_required
from provision.models import Customer, Subscription
from usage.models import SubscriptionUsageDaily

REQUESTS, HISTORY_DAYS, CSV_RUNS, COVERING_INDEX = (int(a) for a in sys.argv[1:5])
out = {"counts": {}, "pages": {}, "csv": {}, "queries": {}}

BASELINE = engines["django"].from_string(
    '{% extends "base.html" %}{% block heading %}{{ customer.name }}{% endblock %}'
    '{% block content %}{{ customer.billing_account_number }}{% endblock %}'
)


@role_required(permissions.CustomerPolicy.can_view)
def baseline_view(request, pk):
    customer = get_object_or_404(Customer, pk=pk)
    from django.http import HttpResponse
    return HttpResponse(BASELINE.render({"customer": customer}, request))


bench_urls = types.ModuleType("bench_cockpit_urls")
bench_urls.urlpatterns = [
    path("bench/customer/<int:pk>/", baseline_view)
] + project_urls.urlpatterns
sys.modules["bench_cockpit_urls"] = bench_urls


class Rollback(Exception):
    pass


HISTORY_SQL = '''
    INSERT INTO usage_subscriptionusagedaily
        (subscription_id, date, seats, billable_users, max_users, overage, utilization,
         computed_at)
    SELECT f.subscription_id, f.date - g.n, f.seats, b.billable,
           GREATEST(b.billable, f.max_users - g.n / 10),
           GREATEST(0, GREATEST(b.billable, f.max_users - g.n / 10) - f.seats),
           LEAST(999.9999, b.billable::numeric / NULLIF(f.seats, 0)),
           now()
    FROM (SELECT DISTINCT ON (subscription_id) * FROM usage_subscriptionusagedaily
          ORDER BY subscription_id, date) f
    JOIN provision_subscription s ON s.id = f.subscription_id
    CROSS JOIN generate_series(1, %s) AS g(n)
    CROSS JOIN LATERAL (SELECT GREATEST(0, round(f.billable_users
        * (1 - ((f.subscription_id %% 21) - 10) / 100.0 * g.n / %s)))::int AS billable) b
    WHERE f.date - g.n >= s.term_start
    ORDER BY g.n DESC, f.subscription_id
'''


def consume(response):
    if hasattr(response, "streaming_content"):
        return sum(len(chunk) for chunk in response.streaming_content)
    return len(response.content)


def summary(times, counts, statuses):
    times.sort()
    return {
        "n": len(times),
        "p50": statistics.median(times),
        "p95": times[max(0, int(round(0.95 * len(times))) - 1)],
        "max": times[-1],
        "queries_max": max(counts),
        "statuses": statuses,
    }


def timed(client, url, params=None, requests=None):
    times, counts, statuses = [], [], {}
    consume(client.get(url, params or {}))  # warm-up
    for _ in range(requests or REQUESTS):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url, params or {})
            consume(response)
            times.append((time.perf_counter() - t0) * 1000)
        counts.append(len(ctx.captured_queries))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return summary(times, counts, statuses)


def timed_many(client, urls):
    times, counts, statuses = [], [], {}
    for url in urls:
        consume(client.get(url))
    for _ in range(max(1, REQUESTS // len(urls))):
        for url in urls:
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                response = client.get(url)
                consume(response)
                times.append((time.perf_counter() - t0) * 1000)
            counts.append(len(ctx.captured_queries))
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return summary(times, counts, statuses)


def page_queries(client, url, params):
    with CaptureQueriesContext(connection) as ctx:
        consume(client.get(url, params))
    return [f"{float(q['time']) * 1000:.1f} ms  {q['sql'][:100]}" for q in ctx.captured_queries]


try:
    with transaction.atomic(), override_settings(ROOT_URLCONF="bench_cockpit_urls"):
        started = time.perf_counter()
        added = 0
        with connection.cursor() as cursor:
            if HISTORY_DAYS:
                # Earlier days for every subscription with rollups, back to its term start,
                # written one day at a time (oldest first) as the rollup task would have:
                # billable drifts by up to ±10 % over the window, the maximum a little lower.
                cursor.execute(HISTORY_SQL, [HISTORY_DAYS, HISTORY_DAYS])
                added = cursor.rowcount
                cursor.execute("ANALYZE usage_subscriptionusagedaily")
            if COVERING_INDEX:
                # A candidate for the models: the rollup lookups as index-only scans. Only
                # meaningful on rows a VACUUM has seen (history committed beforehand): rows
                # written in this transaction are not all-visible, so they are read anyway.
                cursor.execute(
                    "CREATE INDEX bench_usagedaily_cover ON usage_subscriptionusagedaily "
                    "(subscription_id, date) INCLUDE (billable_users, max_users)"
                )
                cursor.execute("ANALYZE usage_subscriptionusagedaily")
        out["history_seconds"] = round(time.perf_counter() - started, 1)
        lead = get_user_model().objects.create(username=f"bench-lead-{uuid.uuid4().hex[:6]}")
        lead.groups.add(Group.objects.get_or_create(name=Role.SUPPORT_LEAD)[0])
        manager = (
            get_user_model().objects.filter(groups__name=Role.ACCOUNT_MANAGER)
            .annotate(book=Count("owned_customers")).filter(book__gt=0).order_by("pk").first()
        )
        today = timezone.localdate()
        active = Subscription.objects.filter(status=SubscriptionStatus.ACTIVE)
        out["counts"] = {
            "customers": Customer.objects.count(),
            "customers with an active subscription": active.values("customer_id")
            .distinct().count(),
            "active subscriptions": active.count(),
            "daily rollups (with the added history)": SubscriptionUsageDaily.objects.count(),
            "rollups added (rolled back)": added,
            "the account manager's book": Customer.objects.filter(
                account_owner=manager).count(),
        }
        # The renewal window that holds 10,000 customers (the nearest term end per customer).
        nearest = (
            active.values("customer_id").annotate(renewal=Min("term_end"))
            .order_by("renewal").values_list("renewal", flat=True)[9999]
        )
        window = (nearest - today).days
        out["counts"]["CSV renewal window (days)"] = window

        baseline_client = Client()
        baseline_client.force_login(lead)
        am = Client()
        am.force_login(manager)
        lead_client = Client()
        lead_client.force_login(lead)
        some_customer = Customer.objects.order_by("pk").values_list("pk", flat=True)[1000]
        pages = out["pages"]
        pages["baseline: one customer by primary key"] = timed(
            baseline_client, f"/bench/customer/{some_customer}/")
        cockpit = "/cockpit/"
        pages["cockpit, AM book: first page"] = timed(am, cockpit)
        pages["cockpit, AM book: sorted by utilization"] = timed(
            am, cockpit, {"sort": "-utilization"})
        pages["cockpit, AM book: over seats"] = timed(am, cockpit, {"risk": "over_seats"})
        pages["cockpit, AM book: over seats, by seats owed"] = timed(
            am, cockpit, {"risk": "over_seats", "sort": "-owed"})
        pages["cockpit, AM book: utilization 0-50 %, renewal in 90 d"] = timed(
            am, cockpit, {"utilization_max": "50", "renewal_within": "90"})
        pages["cockpit, AM book: page 10"] = timed(am, cockpit, {"page": "10"})
        pages["cockpit, lead (everyone): first page"] = timed(lead_client, cockpit)
        pages["cockpit, lead: search a name"] = timed(lead_client, cockpit, {"q": "acme"})
        pages["cockpit, lead: renewal within 30 d"] = timed(
            lead_client, cockpit, {"renewal_within": "30"})
        slow = max(3, REQUESTS // 6)
        pages["cockpit, lead: over seats (every customer's figures)"] = timed(
            lead_client, cockpit, {"risk": "over_seats"}, requests=slow)
        pages["cockpit, lead: sorted by utilization (every customer's figures)"] = timed(
            lead_client, cockpit, {"sort": "-utilization"}, requests=slow)
        pages["API /api/cockpit/, AM book"] = timed(am, "/api/cockpit/")
        pages["API /api/cockpit/, AM book, over seats"] = timed(
            am, "/api/cockpit/", {"risk": "over_seats"})
        pages["API /api/cockpit/, lead: first page"] = timed(lead_client, "/api/cockpit/")

        latest = SubscriptionUsageDaily.objects.order_by("-date").values_list(
            "date", flat=True).first()
        with_rollups = list(
            SubscriptionUsageDaily.objects.filter(date=latest)
            .values_list("subscription__customer_id", flat=True).order_by("subscription_id")[:5]
        )
        most = list(
            Customer.objects.annotate(n=Count("subscriptions", filter=Q(
                subscriptions__status=SubscriptionStatus.ACTIVE)))
            .order_by("-n", "pk").values_list("pk", flat=True)[:3]
        )
        saas = list(
            active.filter(deployment=Deployment.GITLAB_COM).order_by("pk")
            .values_list("customer_id", flat=True)[:200:40]
        )
        for label, pks in (
            ("self-managed with usage", with_rollups),
            ("most active subscriptions", most),
            ("GitLab.com", saas),
        ):
            pages[f"cockpit customer page: {label} (x{len(pks)})"] = timed_many(
                am, [f"/cockpit/customers/{pk}/" for pk in pks])

        for label, params in (
            ("by name", {"all": "true", "renewal_within": str(window)}),
            ("by utilization", {"all": "true", "renewal_within": str(window),
                                "sort": "-utilization"}),
        ):
            runs = []
            for _ in range(CSV_RUNS):
                with CaptureQueriesContext(connection) as ctx:
                    t0 = time.perf_counter()
                    response = lead_client.get("/cockpit/export.csv", params)
                    body = b"".join(response.streaming_content)
                    runs.append((time.perf_counter() - t0) * 1000)
                rows = body.count(b"\n") - 1
            out["csv"][label] = {
                "rows": rows, "bytes": len(body), "runs_ms": [round(r) for r in runs],
                "best_ms": min(runs), "rows_per_s": rows / (min(runs) / 1000),
                "queries": len(ctx.captured_queries), "status": response.status_code,
            }
        out["queries"]["AM book, first page"] = page_queries(am, cockpit, {})
        out["queries"]["lead, sorted by utilization"] = page_queries(
            lead_client, cockpit, {"sort": "-utilization"})
        raise Rollback
except Rollback:
    pass
print("BENCH-JSON " + json.dumps(out, default=str))
"""


def test_cockpit_latency_and_csv_export(tmp_path):
    require_scale_database(DATABASE_URL)
    figures = run_bench_script(
        tmp_path,
        BENCH_SCRIPT,
        REQUESTS,
        HISTORY_DAYS,
        CSV_RUNS,
        COVERING_INDEX,
        database_url=DATABASE_URL,
    )
    print(f"\nCockpit on {DATABASE_URL.rsplit('/', 1)[-1]}: {figures['counts']}")
    print(
        f"rollup history added in {figures['history_seconds']} s (rolled back); "
        f"covering index candidate: {'yes' if COVERING_INDEX else 'no'}\n"
    )
    pages = figures["pages"]
    base = next(row for label, row in pages.items() if label.startswith("baseline"))
    print("| page | n | p50 ms | p95 ms | max ms | p95 / baseline | queries (max) | answers |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, row in pages.items():
        answers = ", ".join(f"{code}×{n}" for code, n in sorted(row["statuses"].items()))
        print(
            f"| {label} | {row['n']} | {row['p50']:.1f} | {row['p95']:.1f} | {row['max']:.1f} | "
            f"{row['p95'] / base['p95']:.1f}× | {row['queries_max']} | {answers} |"
        )
    print("\n| CSV export | rows | bytes | runs (ms) | best ms | rows/s | queries | status |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for label, row in figures["csv"].items():
        print(
            f"| {label} | {row['rows']} | {row['bytes']} | {row['runs_ms']} | "
            f"{row['best_ms']:.0f} | {row['rows_per_s']:.0f} | {row['queries']} | "
            f"{row['status']} |"
        )
    for label, queries in figures["queries"].items():
        print(f"\n{label}, its queries:")
        for line in queries:
            print(f"  {line}")
    statuses = {code for row in pages.values() for code in row["statuses"]}
    assert statuses == {"200"}, pages
    assert all(row["status"] == 200 and row["rows"] >= 10_000 for row in figures["csv"].values())
