from rest_framework import viewsets


class SelectorReadOnlyViewSet(viewsets.ReadOnlyModelViewSet):
    """A read-only viewset whose rows come from a list selector (visibility, query shape).

    Subclasses set ``list_selector`` (returning ``(queryset, filterset)``), ``filterset_class``
    and ``serializer_class``.
    """

    list_selector = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no user; it only needs the model to type the fields.
            return self.filterset_class._meta.model.objects.none()
        queryset, _ = type(self).list_selector(actor=self.request.user)
        return queryset
