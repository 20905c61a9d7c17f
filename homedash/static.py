"""Static files from the same process, so the embedded default needs no web server in
front. Files come from STATIC_ROOT (filled by collectstatic); in development, when nothing
was collected, from the finders."""

from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.views import static


class StaticFilesApp(ASGIStaticFilesHandler):
    def serve(self, request):
        root = settings.STATIC_ROOT
        relative = self.file_path(request.path)
        if root and (root / relative).is_file():
            response = static.serve(request, relative, document_root=root)
            # Vendored files carry their version in the name; ours change rarely.
            response.headers["Cache-Control"] = "public, max-age=3600"
            return response
        return super().serve(request)
