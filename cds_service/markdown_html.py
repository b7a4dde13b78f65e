"""Card Markdown to HTML for the pages (development preview, evidence app): one renderer for both.

markdown-it-py's ``js-default`` preset is CommonMark plus GitHub-style tables and strikethrough
(CDS Hooks card detail is GitHub Flavored Markdown) with raw HTML off: markup in the text is
escaped and unsafe link schemes (``javascript:``, ``data:``...) are refused, so the output is safe
to put in a page as is.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

_RENDERER = MarkdownIt("js-default")


def render_markdown(text: str) -> Markup:
    """``text`` rendered to HTML that needs no further escaping."""
    return Markup(_RENDERER.render(str(text)))
