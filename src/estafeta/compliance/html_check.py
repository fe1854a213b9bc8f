"""A small HTML well-formedness check for email bodies: unclosed and stray tags, duplicate attributes.

Mail clients forgive a lot, but spam filters score broken markup, and an unclosed `<a>` or `<table>` can
swallow the rest of a message, footer and unsubscribe link included. Elements whose end tag HTML makes
optional (`p`, `li`, `td`, ...) and void elements (`br`, `img`, ...) are not reported.
"""

from __future__ import annotations

from html.parser import HTMLParser

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
OPTIONAL_END = frozenset(
    {
        "body", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p", "rb", "rp", "rt",
        "rtc", "tbody", "td", "tfoot", "th", "thead", "tr",
    }
)  # fmt: skip


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, int]] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        names = [name for name, _ in attrs]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problems.append(f"<{tag}> on line {line} has the attribute {name!r} more than once")
        if tag not in VOID:
            self.open.append((tag, line))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.open and self.open[-1][0] == tag:
            self.open.pop()  # `<div/>`: treated as closed, as XHTML-minded editors write it

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in VOID:
            return
        depth = next((i for i in range(len(self.open) - 1, -1, -1) if self.open[i][0] == tag), None)
        if depth is None:
            self.problems.append(f"</{tag}> on line {line} closes no open <{tag}>")
            return
        for name, opened in self.open[depth + 1 :]:
            if name not in OPTIONAL_END:
                self.problems.append(
                    f"<{name}> opened on line {opened} is not closed before </{tag}> on line {line}"
                )
        del self.open[depth:]


def html_problems(html: str) -> list[str]:
    """What is wrong with the markup, in document order; empty when it is well-formed."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    problems = checker.problems
    for name, opened in checker.open:
        if name not in OPTIONAL_END:
            problems.append(f"<{name}> opened on line {opened} is never closed")
    return problems
