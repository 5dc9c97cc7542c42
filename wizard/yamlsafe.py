"""The one loader for YAML an operator hands the wizard (plans first; later any operator-supplied YAML).

``yaml.safe_load`` builds no objects, but it still keeps the LAST of two duplicate keys (so a
line added further down silently wins — the plan-injection bug), expands aliases without
limit (a billion-laughs file runs for minutes and eats memory) and recurses once per nesting
level (10000 ``[`` end in a RecursionError). This loader refuses all three, and files over
``MAX_BYTES``, each as one ``YamlRefused`` line:

- duplicate keys, at any depth;
- aliases and anchors altogether: a plan never needs them (``refuse_aliases=False`` keeps
  anchors and allows aliases that expand to at most ``ALIAS_BUDGET``
  values in all, for YAML that does);
- nesting deeper than ``MAX_DEPTH``;
- more than ``MAX_BYTES`` bytes.

It is pure PyYAML (``SafeLoader``), so every refusal comes before anything is expanded.

``BlockDumper`` is the one way the wizard writes YAML people read (workflows, exports, diffs): a
multi-line string (a script, an nginx config, a PEM certificate) as a literal block, as its file reads.
"""

from __future__ import annotations

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
ALIAS_BUDGET = 100


class YamlRefused(ValueError):
    """The document is refused; ``str(e)`` is one line that names the problem and where."""


def _where(mark) -> str:
    return f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "?"


class _StrictLoader(yaml.SafeLoader):
    refuse_aliases = True

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            if self.refuse_aliases:
                raise YamlRefused(f"an alias (*{event.anchor}) at {_where(event.start_mark)}: aliases and anchors "
                                  "are not allowed here; write the value out")
            target = self.anchors.get(event.anchor)
            self._aliases += _size(target, {}) if target is not None else 1
            if self._aliases > ALIAS_BUDGET:
                raise YamlRefused(f"aliases expand to more than {ALIAS_BUDGET} values (at "
                                  f"{_where(event.start_mark)}): write the values out")
        else:
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None and self.refuse_aliases:
                raise YamlRefused(f"an anchor (&{anchor}) at {_where(event.start_mark)}: aliases and anchors are "
                                  "not allowed here; write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels at {_where(event.start_mark)}: "
                                  "flatten the document")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except Exception:  # noqa: BLE001 - an unhashable key: PyYAML reports it below
                    continue
                if key in seen:
                    raise YamlRefused(f"duplicate key {key!r} at {_where(key_node.start_mark)} (first at "
                                      f"{_where(seen[key])}): keep one")
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _size(node, seen: dict) -> int:
    """How many nodes ``node`` stands for once every alias in it is expanded (a cycle counts as too many)."""
    key = id(node)
    if key in seen:
        if seen[key] is None:
            return ALIAS_BUDGET + 1
        return seen[key]
    seen[key] = None
    if isinstance(node, MappingNode):
        n = 1 + sum(_size(k, seen) + _size(v, seen) for k, v in node.value)
    elif isinstance(node.value, list):
        n = 1 + sum(_size(v, seen) for v in node.value)
    else:
        n = 1
    seen[key] = n = min(n, ALIAS_BUDGET + 1)
    return n


class _BudgetLoader(_StrictLoader):
    refuse_aliases = False


def load(text: str | bytes, *, refuse_aliases: bool = True):
    """Parse one YAML document strictly; raises ``YamlRefused`` (the rules above) or ``yaml.YAMLError``."""
    size = len(text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise YamlRefused(f"{size} bytes, over the {MAX_BYTES} byte limit: a plan is a few kilobytes")
    loader = (_StrictLoader if refuse_aliases else _BudgetLoader)(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YamlRefused(f"nested too deeply (over {MAX_DEPTH} levels): flatten the document") from None
    finally:
        loader.dispose()


def describe_error(e: yaml.YAMLError, text: str | None = None) -> str:
    """A PyYAML syntax error as one line: 'not valid YAML at line L column C: PROBLEM'."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, ESC, …)
        where = "?"
        if isinstance(e.position, int) and text is not None:
            line = text.count("\n", 0, e.position)
            where = f"line {line + 1} column {e.position - (text.rfind(chr(10), 0, e.position) + 1) + 1}"
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        return f"not valid YAML at {where}: the character {char} is not allowed in YAML"
    mark = getattr(e, "problem_mark", None)
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    return f"not valid YAML at {_where(mark)}: {problem}"


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, configs, certificates) as literal blocks (|), everything else as PyYAML
    would. (PyYAML itself falls back to a quoted scalar for text a literal block cannot hold: trailing spaces,
    control characters.)"""


def _block_str(dumper: yaml.SafeDumper, data: str):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


BlockDumper.add_representer(str, _block_str)


def dump_block(obj, **kw) -> str:
    """``obj`` as YAML for reading (``BlockDumper``); keyword arguments as ``yaml.dump``'s."""
    return yaml.dump(obj, Dumper=BlockDumper, **kw)
