from django.http import HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or request.path == "/graphql"


def permission_denied(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": "Forbidden."}}, status=403)
    return render(request, "403.html", status=403)


def page_not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if _wants_json(request):
        return JsonResponse(
            {"error": {"code": "server_error", "message": "Internal error."}}, status=500
        )
    # No request context: the context processors touch the session and role tables, and a 500
    # page must still render when the database is what failed.
    body = loader.get_template("500.html").render(
        {"request_id": getattr(request, "request_id", "")}
    )
    return HttpResponseServerError(body)
