"""Which models exist and which provider serves each, from settings and the health check."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.conf import settings

from chat.models import ProviderModel
from chat.providers.base import Provider
from chat.providers.demo import DEMO_MODEL, DemoProvider
from chat.providers.openai_compatible import OpenAICompatibleProvider


@dataclass(frozen=True)
class ModelChoice:
    id: str
    label: str
    provider: str


@cache
def demo_provider() -> DemoProvider:
    return DemoProvider(settings.DEMO_TOKEN_DELAY_MS)


def openai_provider() -> OpenAICompatibleProvider | None:
    """A fresh client: SDK clients hold an HTTP pool tied to the event loop that used it."""
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
        max_tokens=settings.LLM_MAX_TOKENS,
    )


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


def default_model() -> str:
    models = available_models()
    ids = [choice.id for choice in models]
    if settings.DEFAULT_MODEL in ids:
        return settings.DEFAULT_MODEL
    return ids[0] if ids else ""
