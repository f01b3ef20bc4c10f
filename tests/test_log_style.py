"""Every log line of the package is one event in the style ``event.name key=value ...``
(controlplane/logs.py), checked on the source with ``ast``: each ``log.<level>(...)`` call's
message is a literal that starts with a dotted event name followed only by ``key=value`` pairs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# A value is one %-placeholder or a token without spaces; `%s` alone may carry pre-built pairs.
_VALUE = r"(%[-#0 +]*\d*(\.\d+)?[sdrfig]|[^\s=%]+)+"
STYLE = re.compile(rf"[a-z][a-z0-9_]*(\.([a-z0-9_]+|%s))+( ([a-z_][a-z0-9_]*={_VALUE}|%s))*")


def log_calls(path: Path) -> list[tuple[int, str | None]]:
    """(line, message literal or None when it is not a literal) of every logger call in ``path``."""
    out: list[tuple[int, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        if not (name == "log" or name.endswith("log") or name.endswith("logger")):
            continue
        first = node.args[0] if node.args else None
        literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        out.append((node.lineno, literal))
    return out


def violations(root: Path) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line}: {message!r}"
        for path in sorted(root.rglob("*.py"))
        if "v1" not in path.relative_to(root).parts[:-1]  # generated code
        for line, message in log_calls(path)
        if message is None or not STYLE.fullmatch(message)
    ]


def test_every_log_line_of_the_package_is_event_name_key_value():
    assert violations(REPO / "controlplane") == []


def test_the_checker_tells_the_styles_apart():
    good = [
        "xds.stream_closed node=%s gateway=%s reason=%s",
        "serve.started source=%s mirror_body_limit=%d",
        "kubernetes.synced host=%s %s",
        "lease.%s lease=%s/%s",
        "status.changed ok=True",
    ]
    bad = ["xds stream connected %s", "snapshot set gateway=%s", "provider.watch_failed (frozen)", "nack error=%r: %s"]
    assert [m for m in good if not STYLE.fullmatch(m)] == []
    assert [m for m in bad if STYLE.fullmatch(m)] == []
