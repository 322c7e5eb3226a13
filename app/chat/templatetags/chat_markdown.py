from django import template
from django.utils.safestring import SafeString, mark_safe

from chat.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    # render_markdown sanitizes (markdown-it with raw HTML off, then nh3's allow-list).
    return mark_safe(render_markdown(text))  # noqa: S308
