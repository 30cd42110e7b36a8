"""The configuration reference page, generated from the code when the site is built.

Every key of the composed config (the main job, then each option of each config group:
:func:`textrl.reference.reference_entries`, composed by Hydra as the ``textrl`` command composes
it) gets one row: its type, its default, what it accepts and what it means, read from where each
setting is defined:

- schema keys (``env.*``, ``trainer.*``, ``sft.*`` ...): the dataclass field in
  ``textrl/config/schema.py``: its annotation, the ``expected`` text of its check, and its meaning
  from the class docstring (an ``Attributes:`` entry, else the clause of the prose naming the
  field), else the comment on the field's line;
- plugin keys (``policy.*``, ``reward.*``, ``algo.*``, ``interaction.*``): the factory's signature
  (annotation), its ``config_checks`` (or the shared checks of the schema), and its docstring's
  ``Args:`` entry; the loop's keys every algorithm shares come from
  :class:`textrl.config.schema.LoopConfig`, and a nested key of a dataclass default
  (``policy.lora.r``) from that dataclass's field.

:func:`markdown` returns the page; ``docs/_hooks/textrl_docs.py`` serves it as
``reference/configuration.md``. ``tests/integration/test_docs.py`` checks that every composed key
has a row.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from typing import Any

HEADER = re.compile(r"^(?P<indent>\s*)(Args|Arguments|Attributes|Parameters)\b.*:\s*$")
HEADER_START = re.compile(r"^(?P<indent>\s*)(Args|Arguments|Attributes|Parameters)\b(?:\s*\(|\s*:)")
ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")
SECTION = re.compile(r"^\s*(Returns|Raises|Yields|Example|Examples|Note|Notes)\s*:\s*$")


def docstring_entries(doc: str | None) -> dict[str, str]:
    """``{name: text}`` from the ``Args:``/``Attributes:`` sections of a Google-style docstring
    (continuation lines joined; ``a, b: text`` gives both names the text)."""
    entries: dict[str, str] = {}
    if not doc:
        return entries
    lines = inspect.cleandoc(doc).splitlines()
    i = 0
    while i < len(lines):
        header = HEADER_START.match(lines[i])
        i += 1
        if not header:
            continue
        while not lines[i - 1].rstrip().endswith(":") and i < len(lines):  # a header over several lines
            i += 1
        base = len(header.group("indent"))
        names: list[str] = []
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                if i < len(lines) and (len(lines[i]) - len(lines[i].lstrip())) <= base:
                    break
                continue
            indent = len(line) - len(line.lstrip())
            if indent <= base or SECTION.match(line):
                break
            entry = re.match(r"^\s*([A-Za-z_][\w, ]*?)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if entry and indent <= base + 4:
                names = [n.strip() for n in entry.group(1).split(",") if n.strip()]
                for n in names:
                    entries[n] = entry.group(2).strip()
            elif names:
                for n in names:
                    entries[n] = f"{entries[n]} {line.strip()}".strip()
            i += 1
    return entries


def prose_clause(doc: str | None, name: str, names: tuple[str, ...] = ()) -> str:
    """The clause of ``doc``'s prose that names ````name```` first, or ``""``. Clauses are split
    at ``;``, at sentence ends and before ``, ``other```` for each other field name in ``names``; a
    clause that says nothing but the name does not count."""
    if not doc:
        return ""
    prose = re.split(r"\n\s*(?:Args|Arguments|Attributes|Parameters)\b", inspect.cleandoc(doc))[0]
    prose = " ".join(prose.split()).replace("e.g.", "e\x00g\x00").replace("i.e.", "i\x00e\x00")
    others = "|".join(re.escape(n) for n in names)
    splitter = r";\s+|(?<=\.)\s+(?=[A-Z`])" + (rf"|,\s+(?:and\s+)?(?=``(?:{others})``)" if others else "")
    for clause in re.split(splitter, prose):
        if re.search(rf"``{re.escape(name)}``", clause):
            rest = re.sub(
                rf"``{re.escape(name)}``|[^\w]", " ", clause.split(":", 1)[-1] if ": ``" in clause else clause
            )
            if len(rest.split()) < 2:
                return ""
            return clause.strip().rstrip(".;,").replace("\x00", ".")
    return ""


def line_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for the class's field lines that end in a ``#`` comment, and for a
    field whose line is preceded by comment lines (joined)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    lines = source.splitlines()
    for number, line in enumerate(lines, start=1):
        field = re.match(r"^\s+([a-z_]\w*)\s*:", line)
        if not field:
            continue
        if number in comments and not line.strip().startswith("#"):
            out[field.group(1)] = comments[number]
            continue
        above, k = [], number - 1
        while k >= 1 and lines[k - 1].strip().startswith("#"):
            above.insert(0, comments.get(k, ""))
            k -= 1
        if above:
            out[field.group(1)] = " ".join(above)
    return out


@dataclasses.dataclass
class Row:
    """One key of the reference."""

    key: str
    type: str = ""
    default: str = ""
    accepts: str = ""
    meaning: str = ""


def _type_text(hint: Any) -> str:
    """A readable annotation: ``Optional[int]`` for a string annotation as written, else the repr
    without ``typing.``."""
    if hint is inspect.Parameter.empty or hint is None:
        return ""
    text = hint if isinstance(hint, str) else getattr(hint, "__name__", None) or repr(hint)
    text = str(text).replace("typing.", "").replace("NoneType", "None")
    optional = re.fullmatch(r"Optional\[(.*)\]", text)
    return f"{optional.group(1)} | None" if optional else text


def _schema_field(path: list[str]):
    """``(dataclass, field)`` of the schema key ``path`` (``["algo", "kl", "init"]`` maps through
    :class:`LoopConfig`), or ``(None, None)``."""
    from textrl.config import schema

    cls = schema.TrainConfig
    if path[0] == "algo":
        cls, path = schema.LoopConfig, path[1:]
    for i, part in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls and dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return None, None
        f = fields[part]
        if i == len(path) - 1:
            return cls, f
        nested = f.type if isinstance(f.type, type) else schema._NESTED.get(f.type)
        cls = nested if nested is not None and dataclasses.is_dataclass(nested) else None
    return None, None


def _describe_schema(cls: type, field: dataclasses.Field) -> tuple[str, str, str]:
    """``(type, accepts, meaning)`` of a schema field."""
    check = field.metadata.get("check")
    names = tuple(f.name for f in dataclasses.fields(cls))
    meaning = (
        docstring_entries(cls.__doc__).get(field.name)
        or prose_clause(cls.__doc__, field.name, names)
        or line_comments(cls).get(field.name, "")
    )
    return _type_text(field.type), check.expected if check else "", meaning


def _group_meaning(cls: type) -> str:
    """The first sentence of a schema class's docstring (the group's purpose)."""
    first = " ".join((cls.__doc__ or "").split()).split(". ")[0]
    return first.rstrip(".")


def rows_for(option: str, table: dict[str, Any], registry) -> list[Row]:
    """The rows of one section of :func:`textrl.reference.reference_entries` (``option`` is
    ``""`` for the main job or ``"<group>=<name>"``)."""
    from textrl.config import schema
    from textrl.config.plugin_options import factory_parameters, plugin_tables
    from textrl.reference import _text

    chosen = dict(entry.split("=", 1) for entry in ([option] if option else []))
    factories = dict(plugin_tables(registry))
    rows = []
    for key, value in table.items():
        row = Row(key=key, default=_text(value))
        parts = key.split(".")
        group = parts[0]
        if group in factories and len(parts) >= 2:
            name = table.get(f"{group}.name") or chosen.get(group)  # a preset (policy=tinystories) names its factory
            factory = factories[group].get(str(name)) if name is not None else None
            param = parts[1]
            if param == "name":
                row.type, row.accepts = (
                    "str",
                    "an installed option: " + ", ".join(f"`{n}`" for n in sorted(factories[group])),
                )
                row.meaning = f"the {group} option this section describes (`{group}=<name>` selects it)"
            elif factory is not None:
                params = factory_parameters(factory)
                hint = params.hints.get(param)
                declared = next((p for p in params.parameters if p.name == param), None)
                if hint is None and declared is not None:
                    hint = declared.annotation
                row.type = _type_text(hint)
                docs: dict[str, str] = {}
                for klass in reversed(inspect.getmro(factory)) if inspect.isclass(factory) else [factory]:
                    docs.update(docstring_entries(klass.__doc__))
                    docs.update(
                        docstring_entries(getattr(klass, "__init__", None).__doc__ if inspect.isclass(klass) else None)
                    )
                checks = {}
                for klass in reversed(inspect.getmro(factory)) if inspect.isclass(factory) else [factory]:
                    checks.update(getattr(klass, "config_checks", {}) or {})
                dotted = ".".join(parts[1:])
                check = checks.get(dotted) or (schema.REWARD_SHARED_CHECKS.get(param) if group == "reward" else None)
                if group == "algo" and check is None:
                    cls, f = _schema_field(parts)
                    if f is not None:
                        stype, accepts, meaning = _describe_schema(cls, f)
                        row.type = row.type if len(parts) == 2 and row.type else stype
                        row.accepts, docs[dotted] = accepts, docs.get(dotted) or meaning
                row.accepts = row.accepts or (check.expected if check else "")
                nested = declared.default if declared is not None and len(parts) == 3 else None
                if dataclasses.is_dataclass(nested) and not docs.get(dotted):  # policy.lora.r: LoraSettings' r
                    field = next((f for f in dataclasses.fields(nested) if f.name == parts[2]), None)
                    if field is not None:
                        ntype, naccepts, docs[dotted] = _describe_schema(type(nested), field)
                        row.type, row.accepts = ntype, row.accepts or naccepts
                row.meaning = docs.get(dotted) or docs.get(param, "")
                if not row.meaning and inspect.isclass(factory):
                    row.meaning = prose_clause(factory.__doc__, param, tuple(params.names))
        else:
            cls, f = _schema_field(parts)
            if f is not None:
                row.type, row.accepts, row.meaning = _describe_schema(cls, f)
                if not row.meaning and cls is not schema.TrainConfig:
                    row.meaning = f"({_group_meaning(cls)})"
        rows.append(row)
    return rows


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: Sphinx roles shown as inline code, ``|`` escaped,
    and ``<``/``>`` outside code spans written as entities (``interaction=<name>`` is no HTML tag)."""
    text = ROLE.sub(r"`\1`", " ".join(str(text).split())).replace("|", "\\|")
    parts = re.split(r"(`+[^`]*`+)", text)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def _code(text: str) -> str:
    """``text`` as inline code (a value with a backtick is shown plain)."""
    return f"`{text}`" if text and "`" not in text else _cell(text)


def markdown(registry=None) -> str:
    """The configuration reference page (Markdown)."""
    from textrl.plugins import load_plugins
    from textrl.reference import reference_entries

    registry = registry or load_plugins()
    entries = reference_entries(registry)
    out = [
        "# Configuration reference",
        "",
        "Generated from the code when this site was built (`docs/_hooks/config_reference.py`): the",
        "schema dataclasses in `textrl/config/schema.py`, the option YAML files in `conf/`, and the",
        "signatures, `config_checks` and docstrings of the installed plugins' factories. Each default",
        "is shown as it would be typed on the command line (`textrl <key>=<value>`); `(required)` has",
        "no default. `python -m textrl.reference` prints the keys and defaults in a terminal, and",
        "`textrl --cfg job` prints the composed config of any command line.",
        "",
        "**Accepts** is the check every value passes before anything loads; a value it rejects is one",
        "line, `textrl: error: <key>: got <value>; expected <accepts>`.",
        "",
    ]
    for option, table in entries.items():
        title = "Main job (`textrl`)" if not option else f"`{option}`"
        out += [f"## {title}", ""]
        if option:
            out += [
                f"The keys of `{option.split('=')[0]}` with `textrl {option}` (other groups as in the main job).",
                "",
            ]
        out += ["| key | type | default | accepts | meaning |", "| --- | --- | --- | --- | --- |"]
        for row in rows_for(option, table, registry):
            out.append(
                f"| `{row.key}` | {_cell(row.type)} | {_code(_cell(row.default))} | {_cell(row.accepts)} | {_cell(row.meaning)} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
