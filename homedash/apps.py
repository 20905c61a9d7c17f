from django.apps import AppConfig


class HomedashConfig(AppConfig):
    name = "homedash"
    verbose_name = "homedash"

    def ready(self) -> None:
        from homedash import slowdown  # noqa: F401  (connects the failed-login counter)
