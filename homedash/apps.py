from django.apps import AppConfig


class HomedashConfig(AppConfig):
    name = "homedash"
    verbose_name = "homedash"
