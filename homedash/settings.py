"""Django settings for homedash. Everything a household may want to change is a
HOMEDASH_* environment variable (see the README's table); the rest is fixed here."""

from __future__ import annotations

from pathlib import Path

from homedash import config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = config.data_dir(BASE_DIR)

SECRET_KEY = config.secret_key(DATA_DIR)
CREDENTIAL_KEYS = config.encryption_keys(DATA_DIR)
DEBUG = config.env_bool("DEBUG", False)
DEMO = config.env_bool("DEMO", False)

ALLOWED_HOSTS = config.env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
if "*" in ALLOWED_HOSTS:
    raise config.ImproperlyConfigured(
        "HOMEDASH_ALLOWED_HOSTS: '*' would let any web page on the LAN open a websocket to "
        "homedash; list the names and addresses you use instead"
    )
BIND = config.bind()

# Discovery (myStrom UDP 7979, Shelly mDNS) — the runtime reads these.
DISCOVERY = config.env_bool("DISCOVERY", True)
DISCOVERY_BIND = config.env_address("DISCOVERY_BIND", "0.0.0.0")
DISCOVERY_PORT = config.env_int("DISCOVERY_PORT", 7979, minimum=1, maximum=65535)
MDNS = config.env_bool("MDNS", True)
MDNS_INTERFACES = config.env_list("MDNS_INTERFACES", [])
# Gen1 CoIoT status messages (UDP); 0 turns the listener off.
COIOT_PORT = config.env_int("COIOT_PORT", 5683, minimum=0, maximum=65535)
# Device addresses on loopback are refused unless this is set (the simulator and demo set it).
ALLOW_LOOPBACK_DEVICES = config.env_bool("ALLOW_LOOPBACK_DEVICES", DEMO)
AUTO_ADOPT = config.env_bool("AUTO_ADOPT", False)  # newly found devices skip the inbox
# Shelly debug logs: UDP port for devices' debug.udp output (0: no UDP source), lines kept
# per device, longest line shown, seconds a log runs on after its last viewer left.
DEBUG_LOG_UDP_PORT = config.env_int("DEBUG_LOG_UDP_PORT", 0, minimum=0, maximum=65535)
DEBUG_LOG_UDP_BIND = config.env_address("DEBUG_LOG_UDP_BIND", "0.0.0.0")
DEBUG_LOG_LINES = config.env_int("DEBUG_LOG_LINES", 1000, minimum=50, maximum=20000)
DEBUG_LOG_LINE_CAP = config.env_int("DEBUG_LOG_LINE_CAP", 2000, minimum=80, maximum=16000)
DEBUG_LOG_GRACE = config.env_int("DEBUG_LOG_GRACE", 120, minimum=0, maximum=86400)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "template_partials",
    "axes",
    "homedash",
    "devices",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Compresses what every middleware below produced (it only reads the finished body;
    # the ones above touch headers only).
    "homedash.middleware.CompressPagesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "homedash.middleware.OnboardingMiddleware",
    "homedash.middleware.SecurityHeadersMiddleware",
    "homedash.slowdown.AccountSlowdownMiddleware",
    # Axes must come last: it turns lockouts raised further in into its own response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "homedash.urls"
ASGI_APPLICATION = "homedash.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": config.database(DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CHANNEL_LAYERS = {"default": config.channel_layer()}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling per username + address pair: an IP-only lockout would lock out the whole
# household behind one NAT'd address.
AXES_FAILURE_LIMIT = config.env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# ...and per account from any address (homedash/slowdown.py): past this many wrong passwords
# each attempt waits 1 s, doubling, at most LOGIN_ACCOUNT_SLOWDOWN_MAX seconds after the last
# failure; browsers that logged in to the account before are let through.
LOGIN_ACCOUNT_SLOWDOWN_AFTER = config.env_int("LOGIN_ACCOUNT_SLOWDOWN_AFTER", 10, minimum=3, maximum=1000)
LOGIN_ACCOUNT_SLOWDOWN_MAX = 300

# Nothing a household member legitimately posts is big: refuse large bodies early.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 300
# Django checks the above only after the server has buffered the whole body; the server
# itself (homedash.limits) refuses any body past this with 413 before buffering it.
REQUEST_BODY_LIMIT = 2 * DATA_UPLOAD_MAX_MEMORY_SIZE
# Seconds a sleeping Shelly's outbound websocket may stay silent before homedash closes it
# (an awake sensor reports at least this often; a socket nobody talks on costs a descriptor).
SLEEPER_SOCKET_IDLE = config.env_int("SLEEPER_SOCKET_IDLE", 60, minimum=1, maximum=3600)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30  # a month: phones stay logged in
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
HTTPS = config.env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = config.env_list("CSRF_TRUSTED_ORIGINS", [])

LANGUAGE_CODE = "en"
TIME_ZONE = config.env_time_zone("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Credentials never reach the log, whatever the level (see homedash/logfilters.py).
    "filters": {"hide_secrets": {"()": "homedash.logfilters.HideSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["hide_secrets"]}},
    "root": {"handlers": ["console"], "level": config.env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR"])},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # one line per device poll is noise
        "django.channels.server": {"level": "WARNING"},
        # At DEBUG these log the headers and frames they send and receive: the debug-log
        # stream's Authorization header, digest challenges, RPC auth objects.
        "websockets": {"level": "INFO"},
        "httpcore": {"level": "INFO"},
        "hpack": {"level": "INFO"},
        "aiohttp": {"level": "INFO"},
    },
}
