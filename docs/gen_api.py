"""Generate docs/api.md from janusnet's docstrings (standard library only).

Usage::

    python docs/gen_api.py > docs/api.md

Covers every name in ``janusnet.__all__``, ``janusnet.compat.__all__`` and
``janusnet.testing.__all__``, and the pytest fixtures of ``janusnet.testing.plugin``.
The output depends only on the source (no addresses, no dates), so regenerating it
after a docstring change gives a clean diff.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
from types import ModuleType

SECTIONS = ("Args", "Arguments", "Returns", "Raises", "Attributes", "Yields")
SECTION_TITLES = {"Args": "Arguments", "Arguments": "Arguments"}


def _inline(text: str) -> str:
    """Turn reST inline markup into Markdown."""
    text = re.sub(r":(?:class|meth|func|attr|data|mod|exc|obj):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return text


def _dedent_block(lines: list[str]) -> list[str]:
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return [line[cut:] for line in lines]


def render_docstring(doc: str | None) -> str:
    """Render a Google-style docstring as Markdown."""
    if not doc:
        return "*(no docstring)*\n"
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        header = stripped[:-1] if stripped.endswith(":") else None
        if header in SECTIONS and not line.startswith(" "):
            title = SECTION_TITLES.get(header, header)
            out.append(f"**{title}:**\n")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out.extend(_render_section(header, _dedent_block(block)))
            out.append("")
            continue
        if stripped.endswith("::"):
            # A literal block follows: the indented lines after it.
            intro = line[:-1] if stripped != "::" else ""
            if intro.strip():
                out.append(_inline(intro.rstrip()))
            out.append("")
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            out.append("```python")
            out.extend(_dedent_block(block))
            out.append("```")
            out.append("")
            continue
        if stripped.startswith("=====") or stripped.startswith("-----"):
            # reST table borders and section underlines: keep tables as preformatted text.
            if i > 0 and lines[i - 1].strip() and not stripped.startswith("====="):
                # A section underline: make the previous line a bold heading.
                prev = out.pop() if out else ""
                out.extend(["", f"**{prev.strip()}**", ""])
                i += 1
                continue
            table = []
            while i < len(lines) and lines[i].strip():
                table.append(lines[i])
                i += 1
            out.append("```text")
            out.extend(table)
            out.append("```")
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if stripped and not line.startswith(" ") and following.startswith("    "):
            # A reST definition list item: term, then its indented definition.
            i += 1
            definition = []
            while i < len(lines) and lines[i].startswith(" ") and lines[i].strip():
                definition.append(lines[i].strip())
                i += 1
            out.append(f"- {_inline(stripped)}: {_inline(' '.join(definition))}")
            continue
        out.append(_inline(line))
        i += 1
    text = "\n".join(out).strip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def _render_section(header: str, block: list[str]) -> list[str]:
    if header in ("Returns", "Yields"):
        paragraph = " ".join(part.strip() for part in block if part.strip())
        return [_inline(paragraph)]
    items: list[list[str]] = []
    for line in block:
        if not line.strip():
            continue
        if not line.startswith(" "):
            items.append([line.strip()])
        elif items:
            items[-1].append(line.strip())
        else:
            items.append([line.strip()])
    rendered = []
    for parts in items:
        first = parts[0]
        name, sep, rest = first.partition(":")
        # A name, or names joined by "|" ("UsageError", "a | b"); prose stays prose.
        if sep and re.fullmatch(r"[\w*.()\[\],]+(?: ?\| ?[\w*.()\[\],]+)*", name.strip()):
            text = " ".join([rest.strip(), *parts[1:]]).strip()
            rendered.append(f"- `{name.strip()}`: {_inline(text)}")
        else:
            rendered.append(f"- {_inline(' '.join(parts))}")
    return rendered


def _signature(obj: object, name: str) -> str:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"{name}(...)"
    text = str(sig)
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return f"{name}{text}"


DOCUMENTED: set[type] = set()


def _own_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties of ``cls``, in source order.

    Members inherited from a private janusnet base (one not documented here, such as the
    test servers' ``BackgroundServer``) are listed too; those of documented bases are not.
    """
    members = []
    seen: set[str] = set()
    chain = [cls] + [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("janusnet") and base not in DOCUMENTED
    ]
    items = [(name, value) for klass in chain for name, value in klass.__dict__.items()]
    for name, value in items:
        if name in seen:
            continue
        seen.add(name)
        if name.startswith("_") and name not in ("__aenter__",):
            continue
        if name == "__aenter__":
            continue
        if isinstance(value, (staticmethod, classmethod, property)) or inspect.isfunction(value):
            members.append((name, value))
    return members


def _kind_of(value: object) -> str:
    if isinstance(value, property):
        return "property"
    if isinstance(value, classmethod):
        return "classmethod"
    if isinstance(value, staticmethod):
        return "staticmethod"
    func = value
    if inspect.iscoroutinefunction(func):
        return "async method"
    return "method"


def render_class(qualname: str, cls: type) -> list[str]:
    out: list[str] = []
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    kind = "exception" if issubclass(cls, BaseException) else "class"
    if issubclass(cls, enum.Enum):
        kind = "enum"
    out.append(f"### `{qualname}`\n")
    if issubclass(cls, enum.Enum):
        out.append(f"*{kind}* ({', '.join(bases)})\n")
    elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
        out.append(f"*named tuple* `{qualname}({', '.join(cls._fields)})`\n")
    else:
        sig = _signature(cls, qualname)
        base_text = f" — bases: {', '.join(f'`{b}`' for b in bases)}" if bases else ""
        out.append(f"*{kind}*{base_text}\n")
        if kind != "exception" or "__init__" in cls.__dict__:
            out.append(f"```python\n{sig}\n```\n")
    out.append(render_docstring(cls.__doc__))
    if issubclass(cls, enum.Enum):
        out.append("| member | value |\n|---|---|")
        for member in cls:
            out.append(f"| `{member.name}` | `{member.value!r}` |")
        out.append("")
        return out
    if kind == "exception" and "code" in cls.__dict__:
        code = cls.__dict__["code"]
        out.append(f"`code` = `ReturnCode.{code.name}` ({int(code)})\n")
    for name, value in _own_members(cls):
        kind_text = _kind_of(value)
        if isinstance(value, property):
            settable = ", settable" if value.fset else ""
            out.append(f"#### `{qualname}.{name}` *(property{settable})*\n")
            out.append(render_docstring(value.fget.__doc__ if value.fget else None))
            continue
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if inspect.iscoroutinefunction(func):
            kind_text = f"async {kind_text}" if kind_text != "async method" else kind_text
        sig = _signature(func, name)
        if isinstance(value, classmethod):
            sig = re.sub(r"\(cls(, )?", "(", sig, count=1)
        else:
            sig = re.sub(r"\(self(, )?", "(", sig, count=1)
        prefix = "async " if inspect.iscoroutinefunction(func) else ""
        out.append(f"#### `{qualname}.{name}` *({kind_text})*\n")
        out.append(f"```python\n{prefix}{sig}\n```\n")
        out.append(render_docstring(func.__doc__))
    return out


def render_function(qualname: str, func: object) -> list[str]:
    prefix = "async " if inspect.iscoroutinefunction(func) else ""
    sig = _signature(func, qualname.rpartition(".")[2])
    return [
        f"### `{qualname}`\n",
        f"*{'coroutine function' if prefix else 'function'}*\n",
        f"```python\n{prefix}{sig}\n```\n",
        render_docstring(getattr(func, "__doc__", None)),
    ]


def render_value(qualname: str, value: object, doc: str) -> list[str]:
    shown = repr(value)
    if isinstance(value, frozenset):
        shown = "frozenset({" + ", ".join(sorted(repr(v) for v in value)) + "})"
    return [f"### `{qualname}`\n", f"*{type(value).__name__}* = `{shown}`\n", doc + "\n"]


VALUE_DOCS = {
    "janusnet.__version__": "The installed version.",
    "janusnet.OPEN_STATES": (
        "The Janus OPEN states: every `SocketState` but `RESET` (Janus advises testing "
        '"not RESET"). Pass `*janusnet.OPEN_STATES` to `SocketGroup.select`.'
    ),
    "janusnet.compat.registry": (
        "The process-wide `SocketRegistry`: the numbered sockets of this process; "
        "`-1` in the `sock_*` functions addresses its members."
    ),
}


def render_fixtures(module: ModuleType) -> list[str]:
    """The plugin's module docstring, then one entry per fixture (signature without the
    fixtures it depends on internally, which pytest supplies)."""
    out = ["## pytest fixtures (`janusnet.testing.plugin`)\n", render_docstring(module.__doc__)]
    for name in sorted(module.__all__):
        fixture = getattr(module, name)
        func = getattr(fixture, "__wrapped__", fixture)
        scope = "function"
        marker = getattr(fixture, "_fixture_function_marker", None)
        if marker is not None and isinstance(getattr(marker, "scope", None), str):
            scope = marker.scope
        out.append(f"### fixture `{name}`\n")
        out.append(f"*scope: {scope}*\n")
        out.append(render_docstring(getattr(func, "__doc__", None)))
    return out


def render_module(module: ModuleType, title: str, intro: str) -> list[str]:
    out = [f"## {title}\n", intro + "\n"]
    names = sorted(module.__all__, key=lambda n: (n.startswith("_"), n.lower()))
    DOCUMENTED.update(v for v in (getattr(module, n) for n in names) if inspect.isclass(v))
    for name in names:
        value = getattr(module, name)
        qualname = f"{module.__name__}.{name}"
        if inspect.isclass(value):
            out.extend(render_class(qualname, value))
        elif inspect.isfunction(value) or inspect.isfunction(getattr(value, "__wrapped__", None)):
            out.extend(render_function(qualname, value))
        else:
            out.extend(render_value(qualname, value, VALUE_DOCS.get(qualname, "")))
    return out


def main() -> int:
    import janusnet
    import janusnet.compat
    import janusnet.testing
    import janusnet.testing.plugin

    out = [
        "# janusnet API reference\n",
        "Generated from the docstrings by `python docs/gen_api.py > docs/api.md`; do not edit "
        "by hand. The [user guide](guide.md) explains how the pieces fit together, the "
        "[porting guide](porting.md) maps Janus Sockets onto them.\n",
        "Contents: [`janusnet`](#janusnet) · [`janusnet.compat`](#janusnetcompat) · "
        "[`janusnet.testing`](#janusnettesting) · "
        "[pytest fixtures](#pytest-fixtures-janusnettestingplugin)\n",
    ]
    for module in (janusnet, janusnet.compat, janusnet.testing):
        DOCUMENTED.update(
            v for v in (getattr(module, n) for n in module.__all__) if inspect.isclass(v)
        )
    out += render_module(janusnet, "janusnet", render_docstring(janusnet.__doc__).strip())
    out += render_module(
        janusnet.compat, "janusnet.compat", render_docstring(janusnet.compat.__doc__).strip()
    )
    out += render_module(
        janusnet.testing, "janusnet.testing", render_docstring(janusnet.testing.__doc__).strip()
    )
    out += render_fixtures(janusnet.testing.plugin)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
