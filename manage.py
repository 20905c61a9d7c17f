#!/usr/bin/env python
"""homedash's command line: `serve`, `simulate`, and Django's own commands."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homedash.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        from django.conf import settings

        settings.INSTALLED_APPS  # read the HOMEDASH_* variables now, before any command
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A bad HOMEDASH_* variable: say which and stop, without a traceback.
        sys.stderr.write(f"homedash: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
