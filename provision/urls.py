from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from health_check.views import HealthCheckView

from licenses.graphql import graphql_endpoint
from provision.api.urls import router as api_router
from provision.views import ping
from usage.seat_link import seat_link_endpoint

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # GitLab instances: CUSTOMER_PORTAL_URL + "/graphql", no trailing slash (wire protocol §0).
    path("graphql", graphql_endpoint, name="graphql"),
    path(
        "health/",
        HealthCheckView.as_view(
            checks=["health_check.checks.Database", "health_check.checks.Cache"]
        ),
        name="health",
    ),
    # GitLab instances: CUSTOMER_PORTAL_URL + "/api/v1/seat_links" (wire protocol §1.2). Before
    # the API router's include, which would otherwise claim everything under api/.
    path("api/v1/seat_links", seat_link_endpoint, name="seat_link"),
    # Liveness without the database (public; /health/ is the readiness check).
    path("-/ping", ping, name="ping"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include(api_router.urls)),
    path("licenses/", include("licenses.urls")),
    path("usage/", include("usage.urls")),
    path("cockpit/", include("usage.cockpit_urls")),
    path("crm/", include("crm_sync.urls")),
    path("", include("provision.console_urls")),
]

handler403 = "provision.errors.permission_denied"
handler404 = "provision.errors.page_not_found"
handler500 = "provision.errors.server_error"
