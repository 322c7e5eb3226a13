"""Production: behind nginx terminating TLS. `manage.py check --deploy` is clean with it."""

from parley.env import env_bool, env_int, env_required
from parley.settings.base import *

DEBUG = False
SECRET_KEY = env_required("SECRET_KEY")

# nginx terminates TLS and sets X-Forwarded-Proto; Gunicorn only trusts it from
# forwarded_allow_ips (gunicorn.conf.py).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes and Prometheus talk plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Joining the browsers' HSTS preload list is the domain owner's decision (it binds every
# subdomain for months), not the app's: PARLEY_HSTS_PRELOAD turns it on.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
