"""Text to safe HTML for the console's templates: everything is escaped; only the markers the
server itself produces are turned into tags (``**bold**`` in snippets, a small Markdown subset in
eval reports: headings, tables, paragraphs, bold, code, images of files of the same folder)."""

from __future__ import annotations

import re
from collections.abc import Callable

from markupsafe import Markup, escape

BOLD = re.compile(r"\*\*(.+?)\*\*", re.S)
CODE = re.compile(r"`([^`]+)`")
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([A-Za-z0-9._-]+\.png)\)$")


def marked(text: str) -> Markup:
    """A snippet: ``**x**`` becomes ``<mark>x</mark>``, everything else is escaped."""
    out: list[str] = []
    pos = 0
    for m in BOLD.finditer(text):
        out.append(str(escape(text[pos:m.start()])))
        out.append(f"<mark>{escape(m.group(1))}</mark>")
        pos = m.end()
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))


def _inline(text: str) -> str:
    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    return CODE.sub(r"<code>\1</code>", html)


def markdown(text: str, image_url: Callable[[str], str]) -> Markup:
    """The subset of Markdown that eval reports use (``eval.report``)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush()
        elif m := re.match(r"^(#{1,4})\s+(.*)$", line):
            flush()
            level = min(len(m.group(1)) + 1, 5)  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif (img := IMAGE.match(line.strip())) is not None:
            flush()
            out.append(f'<figure><img src="{escape(image_url(img.group(2)))}" alt="{escape(img.group(1))}"></figure>')
        elif line.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append(_table(rows))
            continue
        else:
            para.append(line.strip())
        i += 1
    flush()
    return Markup("\n".join(out))


def _table(rows: list[list[str]]) -> str:
    if len(rows) >= 2 and all(re.fullmatch(r":?-+:?", c) for c in rows[1] if c):
        head, body = rows[0], rows[2:]
    else:
        head, body = [], rows
    html = ['<div class="scroll"><table>']
    if head:
        html.append("<thead><tr>" + "".join(f'<th scope="col">{_inline(c)}</th>' for c in head) + "</tr></thead>")
    html.append("<tbody>")
    for r in body:
        html.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
    html.append("</tbody></table></div>")
    return "".join(html)
