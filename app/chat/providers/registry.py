"""Which models exist and which provider serves each, from settings and the health check."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from functools import cache

import httpx2
from django.conf import settings

from chat.models import ProviderModel
from chat.providers.base import Provider
from chat.providers.demo import DEMO_MODEL, DemoProvider
from chat.providers.openai_compatible import OpenAICompatibleProvider
from parley.loop_local import LoopLocal

# How long a process trusts its list of model ids when checking a message's model (the health
# check refreshes the list every PARLEY_HEALTH_CHECK_INTERVAL seconds anyway).
MODEL_IDS_TTL_SECONDS = 10.0


@dataclass(frozen=True)
class ModelChoice:
    id: str
    label: str
    provider: str


@cache
def demo_provider() -> DemoProvider:
    return DemoProvider(settings.DEMO_TOKEN_DELAY_MS)


@cache
def ssl_context() -> ssl.SSLContext:
    """The process's one TLS context for the model endpoint: building one loads the whole CA
    store, which cost more CPU than the rest of a reply when it was done per reply."""
    context = httpx2.create_ssl_context()
    if settings.LLM_CA_FILE:
        context.load_verify_locations(cafile=settings.LLM_CA_FILE)
    return context


def _new_openai_provider() -> OpenAICompatibleProvider | None:
    if not settings.LLM_BASE_URL:
        return None
    return OpenAICompatibleProvider(
        base_url=settings.LLM_BASE_URL,
        api_key=settings.LLM_API_KEY,
        label=settings.LLM_PROVIDER_LABEL,
        timeout=settings.LLM_TIMEOUT,
        connect_timeout=settings.LLM_CONNECT_TIMEOUT,
        max_retries=settings.LLM_MAX_RETRIES,
        retry_base_delay=settings.LLM_RETRY_BASE_DELAY,
        retry_max_delay=settings.LLM_RETRY_MAX_DELAY,
        ssl_context=ssl_context(),
        max_tokens=settings.LLM_MAX_TOKENS,
        keepalive_seconds=settings.LLM_KEEPALIVE_SECONDS,
    )


async def _close_openai_provider(provider: OpenAICompatibleProvider | None) -> None:
    if provider is not None:
        await provider.aclose()


# One client per event loop: its HTTP connections belong to the loop that opened them.
_openai_provider = LoopLocal(_new_openai_provider, _close_openai_provider)


def openai_provider() -> OpenAICompatibleProvider | None:
    """This event loop's client for the configured endpoint (None when there is none)."""
    return _openai_provider.get()


def configured_providers() -> list[Provider]:
    providers: list[Provider] = []
    if settings.DEMO_PROVIDER:
        providers.append(demo_provider())
    remote = openai_provider()
    if remote is not None:
        providers.append(remote)
    return providers


def provider_for(model: str) -> Provider | None:
    if model == DEMO_MODEL and settings.DEMO_PROVIDER:
        return demo_provider()
    return openai_provider()


def available_models() -> list[ModelChoice]:
    """Models the picker offers: the demo, then the endpoint's (configured or discovered).

    PARLEY_LLM_MODELS, when set, is the allow-list; otherwise every model the health check
    last saw on the endpoint is offered. The default model is always offered so a new install
    works before the first health check has run.
    """
    choices: list[ModelChoice] = []
    if settings.DEMO_PROVIDER:
        choices.append(ModelChoice(DEMO_MODEL, demo_provider().label, "demo"))
    if settings.LLM_BASE_URL:
        label = settings.LLM_PROVIDER_LABEL
        seen = ProviderModel.objects.filter(provider="openai")
        if settings.LLM_MODELS:
            # Configured models, less those the last health check found missing.
            missing = set(seen.filter(available=False).values_list("name", flat=True))
            names = [name for name in settings.LLM_MODELS if name not in missing]
        else:
            names = list(seen.filter(available=True).values_list("name", flat=True))
        if settings.DEFAULT_MODEL and settings.DEFAULT_MODEL not in names:
            names.insert(0, settings.DEFAULT_MODEL)
        choices.extend(ModelChoice(name, f"{name} ({label})", "openai") for name in names)
    return choices


class _ModelIds:
    """The ids of available_models(), kept for MODEL_IDS_TTL_SECONDS: checking each message's
    model must not cost a query per message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: tuple[str, ...] = ()
        self.expires = 0.0

    def get(self) -> tuple[str, ...]:
        now = time.monotonic()
        with self.lock:
            if now >= self.expires:
                self.ids = tuple(choice.id for choice in available_models())
                self.expires = now + MODEL_IDS_TTL_SECONDS
            return self.ids

    def forget(self) -> None:
        with self.lock:
            self.expires = 0.0


cached_model_ids = _ModelIds()


def default_model() -> str:
    ids = cached_model_ids.get()
    if settings.DEFAULT_MODEL in ids:
        return settings.DEFAULT_MODEL
    return ids[0] if ids else ""
