"""The package's shape: the session wires the parts and nothing below it reaches back up;
no import cycles; small modules; a public surface that changes only on purpose."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import aurous_async as aa

PACKAGE = Path(aa.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_imports(path: Path, *, typing: bool = True) -> set[str]:
    """Modules of the package that ``path`` imports at module level (with ``typing``,
    ``if TYPE_CHECKING:`` blocks included: a cycle of types is still a cycle of parts)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if not typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
            if isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (sub.level - 1)]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                if base.startswith("aurous_async"):
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in sub.names)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("aurous_async"))
    modules = {_module_name(p) for p in SOURCES}
    return {name for name in found if name in modules} - {_module_name(path)}


def test_nothing_below_the_session_reads_another_parts_privates() -> None:
    """Defect guarded: resources and flows holding the session and reading its privates
    (a service locator, and an import cycle)."""
    reach = re.compile(
        r"\b[a-z_]+\._(session|transport|scheduler|config|http_session|connection_limit|"
        r"batches|http|parts)\b"
    )
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reach.search(line) and not re.search(r"\bself\._", line)
        and not line.strip().startswith("#")
    ]
    assert offenders == []


def test_only_the_entry_points_import_the_session() -> None:
    importers = sorted(_module_name(p) for p in SOURCES
                       if "aurous_async._session" in _module_imports(p))
    assert all(name == "aurous_async" or name.startswith("aurous_async.cli")
               for name in importers), importers


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    # A package's __init__ importing its own submodules is not a cycle of concern.
    graph = {name: {e for e in edges if not name.startswith(e + ".")}
             for name, edges in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in done:
            return None
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        visiting.append(node)
        for edge in sorted(graph.get(node, ())):
            cycle = visit(edge)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_runtime_import_cycle() -> None:
    assert _find_cycle({_module_name(p): _module_imports(p, typing=False) for p in SOURCES}) \
        is None


def test_no_import_cycle_even_between_types() -> None:
    """Defect guarded: _session -> resources -> _fanout -> resources -> _session (through
    ``TYPE_CHECKING`` imports: the parts held each other)."""
    graph = {_module_name(p): _module_imports(p) for p in SOURCES}
    # The one allowed pair: errors carry models (SynthesisFailedError.character) and models
    # carry errors (BatchResult.error); both are plain values.
    graph["aurous_async._errors"].discard("aurous_async._models")
    assert _find_cycle(graph) is None


def test_no_module_over_450_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in SOURCES}
    assert {name: n for name, n in sizes.items() if n > 450} == {}


def test_the_public_names_are_pinned() -> None:
    """Adding or removing a public name is a decision: update this list with it."""
    assert sorted(aa.__all__) == sorted(PUBLIC_NAMES)
    for name in aa.__all__:
        assert getattr(aa, name) is not None


PUBLIC_NAMES = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AurousError", "AurousSession",
    "AuthenticationError", "Balance", "BatchInUseError", "BatchProgress", "BatchResult",
    "Character", "CharacterAttributes", "CharacterStatus", "Clock", "ConfigurationError",
    "ConflictError", "DeletedCharacter", "DeletedWebhookEndpoint", "EventType", "FakeClock",
    "IdempotencyKeyInUseError", "InMemoryRateLimiter", "InsufficientCreditsError",
    "InvalidRequestError", "Journal", "JournalError", "JournalRecord", "JournalState",
    "LeaseLostError", "MalformedResponseError", "NotFoundError", "PermissionDeniedError",
    "PollPolicy", "Pose", "RateLimit", "RateLimitError", "RateLimitFeedback", "RateLimiter",
    "RateLimiterUnavailableError", "RateLimits", "RawResponse", "RedisJournal",
    "RedisRateLimiter", "Ref", "SQLiteJournal", "ScaledClock", "ServerError",
    "SessionClosedError", "StatusUpdate", "SynthesisFailedError", "SystemClock",
    "UploadClassification", "UploadTicket", "WatchTimeoutError", "WebhookEndpoint",
    "WebhookEvent", "WebhookTestFire", "WebhookVerificationError", "__version__", "webhooks",
]
