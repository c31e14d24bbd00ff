"""Page-number pagination whose count stays cheap on tables of millions of rows.

An exact ``COUNT(*)`` is most of the cost of a list's first page at design scale (a million
audit events: ~270 ms; daily rollups and seat reports grow by ~100,000 rows a day), and
PostgreSQL's row estimates can be far off on a table that was just bulk-loaded. So a list
counts at most ``COUNT_CAP + 1`` of its rows: below the cap ``count`` is exact; above it,
``count`` is the cap and ``count_capped`` is true ("more than 10,000": narrow the filters).
Pages past the cap still work — ``next`` is given while pages come back full — so a caller can
walk a big list, though filtering (a date range, a customer) is the better way to do that.
"""

from django.core.paginator import EmptyPage, Page, Paginator
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

COUNT_CAP = 10_000


class CappedCountPage(Page):
    """A page that, when the count is capped, has a next page whenever it is full."""

    def has_next(self):
        if self.paginator.capped:
            return len(self) == self.paginator.per_page
        return super().has_next()


class CappedCountPaginator(Paginator):
    """Django's paginator with ``count`` capped at ``COUNT_CAP`` (``capped`` says so)."""

    capped = False

    @cached_property
    def count(self):
        rows = self.object_list
        if not hasattr(rows, "query"):
            return len(rows)
        # Only the primary keys, unordered: the list's annotations and joins stay out of it.
        counted = rows.order_by().values("pk")[: COUNT_CAP + 1].count()
        self.capped = counted > COUNT_CAP
        return min(counted, COUNT_CAP)

    def validate_number(self, number):
        try:
            return super().validate_number(number)
        except EmptyPage:
            # Past the counted pages of a capped list is not past its end.
            if self.capped and int(number) >= 1:
                return int(number)
            raise

    def page(self, number):
        number = self.validate_number(number)
        if not self.capped:
            return super().page(number)
        # Django's paginator stops the last page at ``count``; a capped count is no end.
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)

    def _get_page(self, *args, **kwargs):
        return CappedCountPage(*args, **kwargs)


class ProvisionPagination(PageNumberPagination):
    """``?page=N``, 50 rows a page; ``count`` exact up to 10,000 rows, then capped."""

    django_paginator_class = CappedCountPaginator

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.page.paginator.count,
                "count_capped": self.page.paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        properties = response["properties"]
        properties["count"]["description"] = (
            f"Rows matching the filters, counted up to {COUNT_CAP:,}; see count_capped."
        )
        response["properties"] = {
            "count": properties["count"],
            "count_capped": {
                "type": "boolean",
                "description": f"True when more than {COUNT_CAP:,} rows match: count is then "
                f"{COUNT_CAP:,}. Narrow the filters, or follow next.",
            },
            **{k: v for k, v in properties.items() if k != "count"},
        }
        response["required"] = ["count", "count_capped", "results"]
        return response
