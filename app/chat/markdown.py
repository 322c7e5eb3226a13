"""Markdown to HTML for model output, sanitized so that nothing the model writes can run.

Two layers: markdown-it never passes raw HTML through (the `html` option is off, so a
`<script>` in the reply becomes text), and nh3 (the Ammonia sanitizer) then keeps only an
allow-list of tags, attributes and URL schemes, which also removes `javascript:` links.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_renderer = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable("table")
    .enable("strikethrough")
)

_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# No style attributes: the CSP (style-src 'self') would refuse them anyway.
_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}}


def render_markdown(text: str) -> str:
    html = _renderer.render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
        strip_comments=True,
    )
