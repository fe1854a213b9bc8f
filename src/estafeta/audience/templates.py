"""Campaign templates: Jinja2 in its sandbox (a template is customer input), and the plain-text part.

HTML is rendered with autoescaping, so a contact attribute can never inject markup; the subject and text
are rendered without it. When a campaign has no text template, the text part is made from the rendered
HTML, keeping every link's URL readable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, Undefined
from jinja2.sandbox import SandboxedEnvironment

_HTML = SandboxedEnvironment(autoescape=True, undefined=Undefined)
_PLAIN = SandboxedEnvironment(autoescape=False, undefined=Undefined)


class TemplateProblem(ValueError):
    """A template that cannot be compiled or rendered; `line` is 1-based when known."""

    def __init__(self, part: str, line: int | None, reason: str) -> None:
        where = f"{part}, line {line}" if line else part
        super().__init__(f"{where}: {reason}")
        self.part = part
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class CampaignTemplate:
    """The compiled subject, HTML and text templates of a campaign (html or text may be absent); compiled
    once, rendered for every recipient."""

    subject: str
    html: str | None
    text: str | None
    _compiled: dict[str, Template] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.html or self.text):
            raise TemplateProblem("html", None, "an html or a text template is required")
        compiled = {
            part: _compile(part, source)
            for part, source in (("subject", self.subject), ("html", self.html), ("text", self.text))
            if source is not None
        }
        object.__setattr__(self, "_compiled", compiled)

    def render(self, context: dict[str, Any]) -> tuple[str, str | None, str]:
        """(subject, html, text): text is generated from the HTML when there is no text template."""
        subject = " ".join(self._render("subject", context).split())
        html = self._render("html", context) if self.html else None
        text = self._render("text", context) if self.text else html_to_text(html or "")
        return subject, html, text

    def _render(self, part: str, context: dict[str, Any]) -> str:
        try:
            return self._compiled[part].render(context)
        except TemplateError as exc:
            raise TemplateProblem(part, _template_line(exc), str(exc)) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateProblem(part, _template_line(exc), f"{type(exc).__name__}: {exc}") from None


def _compile(part: str, source: str) -> Template:
    env = _HTML if part == "html" else _PLAIN
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, exc.lineno, exc.message or "syntax error") from None


def _template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised at (Jinja2 maps its frames to `<template>`)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol", "h1", "h2", "h3",
    "h4", "h5", "h6", "blockquote", "hr", "title",
}  # fmt: skip
_SKIP = {"script", "style", "head"}


class _TextMaker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._links: list[tuple[str | None, int]] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in _BLOCKS:
            self.out.append("\n\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.out)))
        elif tag == "img" and (alt := dict(attrs).get("alt")):
            self.out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCKS:
            self.out.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            if href and not href.startswith(("#", "mailto:")) and href != label:
                self.out.append(f" <{href}>" if label else f"<{href}>")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: paragraphs, list items, and links as `label <url>`."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    text = "".join(maker.out)
    lines = [line.strip() for line in text.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
