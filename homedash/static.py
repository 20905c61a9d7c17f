"""Static files from the same process, so the embedded default needs no web server in
front. Files come from STATIC_ROOT (filled by collectstatic); in development, when nothing
was collected, from the finders."""

from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.views import static


def cache_control(relative: str) -> str:
    """Vendored files carry their version in the name and never change under it; ours keep
    their names across upgrades, so the browser asks each time (a 304 on the LAN) rather
    than showing an old stylesheet against new pages for an hour after an upgrade."""
    if relative.replace("\\", "/").startswith("vendor/"):
        return "public, max-age=31536000, immutable"
    return "no-cache"


class StaticFilesApp(ASGIStaticFilesHandler):
    def serve(self, request):
        root = settings.STATIC_ROOT
        relative = self.file_path(request.path)
        if root and (root / relative).is_file():
            response = static.serve(request, relative, document_root=root)
        else:
            response = super().serve(request)
        response.headers["Cache-Control"] = cache_control(relative)
        return response
