"""``GET /docs``: the OpenAPI schema as one plain HTML page rendered on the server.

FastAPI's own ``/docs`` and ``/redoc`` load their JavaScript from a CDN, which a plant network
without internet cannot reach; this page needs nothing but the service (not in the paper).
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render_api_docs"]

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:70em}"
    "h2{font-size:1.05em;margin:1.4em 0 .3em;font-family:monospace}"
    ".m{display:inline-block;min-width:4.5em;font-weight:700}"
    "table{border-collapse:collapse;font-size:.9em}th,td{padding:.25em .7em;text-align:left;"
    "border-bottom:1px solid #e4e4e4;vertical-align:top}th{background:#f3f3f3}"
    "p{margin:.3em 0}.muted{color:#777}"
)


def _params(op: dict[str, Any]) -> str:
    rows = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        kind = schema.get("type") or " | ".join(
            str(s.get("type", "")) for s in schema.get("anyOf", []) if s.get("type") != "null"
        )
        default = schema.get("default")
        rows.append(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
            f"<td>{escape(str(kind))}</td><td>{'' if default is None else escape(str(default))}"
            f"</td><td>{escape(p.get('description') or schema.get('description') or '')}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<table><tr><th>parameter</th><th>in</th><th>type</th><th>default</th><th>meaning</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def render_api_docs(schema: dict[str, Any]) -> str:
    """HTML listing every documented route with its summary, description and parameters."""
    info = schema.get("info", {})
    parts = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            accepts = f"<p class='muted'>body: {escape(', '.join(body))}</p>" if body else ""
            desc = escape(op.get("description") or "").replace("\n\n", "<br>")
            parts.append(
                f"<h2><span class='m'>{method.upper()}</span>{escape(path)}</h2>"
                f"<p><b>{escape(op.get('summary') or '')}</b></p><p>{desc}</p>{accepts}"
                f"{_params(op)}"
            )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(info.get('title', ''))} API {escape(str(info.get('version', '')))}</h1>"
        '<p class=\'muted\'>Every error is JSON {"error": "…"}. Machine-readable schema: '
        "<a href='/openapi.json'>/openapi.json</a> · <a href='/'>dashboard</a> · "
        "<a href='/metrics'>metrics</a></p>" + "".join(parts) + "</body></html>"
    )
