"""Settings for pytest and for the server and worker processes the tests start."""

from parley.env import env_str
from parley.settings.base import *

SECRET_KEY = env_str("SECRET_KEY", "test-only-key-test-only-key-test-only-key-0123456789")
DEBUG = False
# Hashing passwords slowly buys nothing in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Plain storage so tests need no collectstatic; the manifest storage is covered by a test.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
