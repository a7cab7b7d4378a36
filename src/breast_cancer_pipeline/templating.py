"""The one place reports are rendered: Jinja2 templates shipped in ``templates/``.

HTML templates (``*.html.j2``) are autoescaped: every value is HTML-escaped unless it is
:class:`markupsafe.Markup` (e.g. a table from ``DataFrame.to_html(escape=True)``). Markdown
templates (``*.md.j2``) escape every value for Markdown instead (:func:`markdown_text`), so a
label or file name from the user's data is shown as text: it cannot end a table cell, start
emphasis or a link, or inject HTML into a viewer that renders it.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

#: Characters that start Markdown syntax inside a line (backslash-escaped).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
#: Characters that cannot appear in a Markdown code span that stays inert and on one line.
_UNSAFE_IN_CODE = re.compile(r"[`<>&|\\\r\n]")


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a report: floats to ``digits`` decimals; ``None``/NaN (not known) as "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_interval(
    values: Mapping[str, Any], key: str, *, value: bool = True, optional: bool = False
) -> str:
    """A figure and its interval for a report: "value [low, high]", each through :func:`fmt`.

    Args:
        values: A block of ``metrics.json`` holding ``key`` and its interval's ends
            ``<key>_ci_low`` and ``<key>_ci_high``; an absent one shows as "–".
        key: The figure's name.
        value: ``False``: the interval alone, "[low, high]".
        optional: ``True``: when an end is absent or ``None``, the value alone.

    Returns:
        The text of the cell.
    """
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    shown = fmt(values.get(key))
    if optional and (low is None or high is None):
        return shown
    interval = f"[{fmt(low)}, {fmt(high)}]"
    return f"{shown} {interval}" if value else interval


def markdown_text(value: Any) -> Markup:
    """``value`` as inert Markdown text on one line.

    ``<``, ``>`` and ``&`` become entities (a viewer renders ``&lt;`` as ``<``), Markdown
    punctuation is backslash-escaped (``|`` no longer ends a table cell) and line breaks
    become spaces (a value cannot end a list item or a table row).
    """
    if isinstance(value, Markup):
        return value
    text = " ".join(str(value).splitlines())
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return Markup(html.escape(text, quote=False))


def markdown_code(value: Any) -> Markup:
    """``value`` as a Markdown code span, or as escaped text if it cannot be one safely."""
    text = str(value)
    if not text or _UNSAFE_IN_CODE.search(text):
        return markdown_text(text)
    return Markup(f"`{text}`")


def _finalize_markdown(value: Any) -> Any:
    return markdown_text("" if value is None else value)


def _environment(markdown: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("breast_cancer_pipeline", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize_markdown if markdown else None,
    )
    env.filters["fmt"] = fmt
    env.filters["code"] = markdown_code if markdown else _html_code
    env.filters["code_spans"] = markdown_text if markdown else code_spans
    return env


def _html_code(value: Any) -> Markup:
    return Markup("<code>{}</code>").format(value)


def code_spans(value: Any) -> Markup:
    """Escape ``value`` for HTML, then show its backtick-quoted parts as ``<code>``.

    For the project's own prose (check descriptions) that names parameters as ```key```.
    """
    escaped = str(Markup.escape(value))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


@functools.cache
def _environments() -> dict[bool, Environment]:
    return {markdown: _environment(markdown) for markdown in (False, True)}


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` from the package's ``templates/`` folder.

    Args:
        name: A file in ``templates/``: ``*.html.j2`` (HTML-escaped) or ``*.md.j2``
            (Markdown-escaped).
        **context: The template's variables; a variable the template uses but that is not
            given is an error (``StrictUndefined``).

    Returns:
        The rendered text.
    """
    return _environments()[name.endswith(".md.j2")].get_template(name).render(**context)
