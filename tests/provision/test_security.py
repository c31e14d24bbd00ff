import pytest
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_login_locks_out_after_repeated_failures(client, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="victim", roles=["support"])
    for _ in range(3):
        client.post(reverse("login"), {"username": "victim", "password": "wrong"})
    response = client.post(
        reverse("login"), {"username": "victim", "password": "correct horse battery"}
    )
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_staff_pages_send_a_content_security_policy(client_for, support_agent):
    response = client_for(support_agent).get(reverse("login"))
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_django_admin_is_for_superusers_only(client_for, support_agent, admin_user):
    assert client_for(support_agent).get("/admin/").status_code == 302
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    assert client_for(admin_user).get("/admin/provision/auditevent/").status_code == 200


def test_audit_events_are_read_only_in_django_admin(client_for, admin_user, subscription):
    from provision.models import AuditEvent

    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client = client_for(admin_user)
    event = AuditEvent.objects.first()
    change_page = client.get(f"/admin/provision/auditevent/{event.pk}/change/")
    assert change_page.status_code == 200
    assert b'name="_save"' not in change_page.content
    delete = client.post(f"/admin/provision/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_health_endpoint_reports_database_and_cache(client):
    response = client.get("/health/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    assert any("Database" in name for name in body)
