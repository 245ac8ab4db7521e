"""HTML from Python: every value escaped unless it is Html (markup this package made itself)."""

import html
import time


class Html(str):
    """Markup made here from escaped parts: inserted as it is."""


def esc(value) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content="", **attrs) -> Html:
    """<name attrs>content</name>; attribute names with _ for - (class_ for class)."""
    at = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Html(f"<{name}{at}>{esc(content)}</{name}>")


def link(href: str, text) -> Html:
    return tag("a", text, href=href)


def table(headers, rows, empty="none") -> Html:
    if not rows:
        return tag("p", empty, class_="empty")
    head = tag("tr", join(tag("th", h) for h in headers))
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    return tag("table", join([tag("thead", head), tag("tbody", body)]))


def form_button(action: str, label: str, csrf: str, confirm: str = "") -> Html:
    return tag("form", join([Html(f'<input type="hidden" name="csrf" value="{esc(csrf)}">'),
                             tag("button", label, type="submit", data_confirm=confirm or None)]),
               method="post", action=action, class_="inline")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def when(unix: float | None) -> str:
    if not unix:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def clock_time(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix)) + f".{int(unix * 1000) % 1000:03d}"


def mib(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def bar_chart(points: list[tuple[float, float]], unit: str, width=900, height=180) -> Html:
    """An SVG bar chart of (hour, value) points, one bar an hour, drawn here (no script)."""
    if not points:
        return tag("p", "nothing used in this period", class_="empty")
    top = max(v for _, v in points) or 1.0
    pad_left, pad_bottom = 60, 20
    step = (width - pad_left) / len(points)
    parts = [f'<line x1="{pad_left}" y1="{height - pad_bottom}" x2="{width}" y2="{height - pad_bottom}" class="axis"/>',
             f'<text x="{pad_left - 6}" y="12" class="ylabel">{esc(_short(top))} {esc(unit)}</text>']
    for i, (hour, value) in enumerate(points):
        h = (height - pad_bottom - 16) * value / top
        x = pad_left + i * step
        parts.append(f'<rect x="{x + 1:.1f}" y="{height - pad_bottom - h:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{h:.1f}" class="bar"><title>{esc(when(hour))}: {esc(_short(value))} {esc(unit)}'
                     '</title></rect>')
        if i % max(1, len(points) // 6) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 4}" class="xlabel">'
                         f'{esc(time.strftime("%d %H:00", time.localtime(hour)))}</text>')
    return Html(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">{"".join(parts)}</svg>')


def _short(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"
