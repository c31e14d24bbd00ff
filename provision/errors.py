from django.http import JsonResponse
from django.shortcuts import render


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
    return render(request, "500.html", status=500)
