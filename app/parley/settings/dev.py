"""Local development: `make -C app run`. Never used in production."""

from parley.env import env_bool, env_str
from parley.settings.base import *

DEBUG = env_bool("DEBUG", True)
# A fixed key is fine here: dev sessions are throwaway and production refuses to start without
# PARLEY_SECRET_KEY.
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-parley-dev-only-insecure-key")
# Serve static files straight from the apps, picking up edits (no collectstatic in dev).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
