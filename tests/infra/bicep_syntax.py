"""Parse every infra/**/*.bicep with tree-sitter-bicep; fail on any syntax error.

A syntax check only (no type or API-version validation: that needs the Bicep CLI, which CI does
not have). Prints `file:line:col: message` for every ERROR or MISSING node and exits 1 if any.
Usage: python tests/infra/bicep_syntax.py [FILE_OR_DIR ...]   (default: infra/)

The other checks read Bicep through this module too: `parse` gives the tree-sitter tree, and
`declarations` the file's params (type, literal default, @allowed values), vars and resources
(type, condition, body as Python values), with literals turned into str/int/bool/list/dict and
everything else kept as `Expr` (its source text). Nothing is evaluated beyond a reference to a
param's literal default or a var's literal value (`symbol_value`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def parse(path: Path) -> tree_sitter.Tree:
    return PARSER.parse(path.read_bytes())


class Expr(str):
    """An expression the checks do not evaluate, as its Bicep source text."""

    def __repr__(self) -> str:
        return f"Expr({str.__repr__(self)})"


_ESCAPES = {"\\\\": "\\", "\\'": "'", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


def string_literal(node) -> str | None:
    """The value of a string node without interpolation (escapes resolved), else None."""
    if node.type != "string":
        return None
    parts = []
    for c in node.named_children:
        if c.type == "string_content":
            parts.append(c.text.decode())
        elif c.type == "escape_sequence":
            text = c.text.decode()
            parts.append(_ESCAPES.get(text, text))
        else:  # interpolation
            return None
    return "".join(parts)


def value(node):
    """A Bicep expression as a Python value: str, int, bool, None, list, dict; else Expr."""
    t = node.type
    if t == "string":
        s = string_literal(node)
        return Expr(node.text.decode()) if s is None else s
    if t == "number":
        return int(node.text.decode())
    if t == "boolean":
        return node.text == b"true"
    if t == "null":
        return None
    if t == "unary_expression" and node.text.decode().startswith("-") and node.named_children[0].type == "number":
        return -int(node.named_children[0].text.decode())
    if t == "array":
        return [value(c) for c in node.named_children if c.type != "comment"]
    if t == "object":
        out = {}
        for prop in node.named_children:
            if prop.type != "object_property":
                continue
            key_node, val_node = prop.named_children[0], prop.named_children[-1]
            key = string_literal(key_node) if key_node.type == "string" else key_node.text.decode()
            out[key] = value(val_node)
        return out
    return Expr(node.text.decode())


@dataclass
class Param:
    name: str
    line: int
    type: str
    default: object = None  # Python value, Expr, or None when there is no default
    has_default: bool = False
    allowed: list | None = None
    decorators: dict = field(default_factory=dict)  # decorator name -> its arguments' values


@dataclass
class Resource:
    symbol: str
    type: str  # 'Microsoft.X/y@version'
    line: int
    body: dict
    condition: str | None = None  # source text of `if (...)`, None when unconditional
    existing: bool = False


@dataclass
class Declarations:
    path: Path
    params: dict[str, Param]
    variables: dict[str, object]
    resources: list[Resource]

    def symbol_value(self, v):
        """`v`, or the literal behind it when it is a bare reference to a param or var."""
        if isinstance(v, Expr):
            if v in self.params and self.params[v].has_default:
                return self.params[v].default
            if v in self.variables and not isinstance(self.variables[v], Expr):
                return self.variables[v]
        return v


def _decorators(node) -> dict:
    """The `decorators` node just before a declaration, as {name: [argument values]}."""
    prev = node.prev_named_sibling
    while prev is not None and prev.type == "comment":
        prev = prev.prev_named_sibling
    out: dict = {}
    if prev is None or prev.type != "decorators":
        return out
    for dec in prev.named_children:
        call = dec.named_children[0] if dec.named_children else None
        if call is None or call.type != "call_expression":
            continue
        name = call.named_children[0].text.decode()
        args = call.named_children[1] if len(call.named_children) > 1 else None
        out[name] = [value(a) for a in args.named_children] if args is not None else []
    return out


def declarations(path: Path) -> Declarations:
    """The params, vars and resources declared at the top level of one .bicep file."""
    root = parse(path).root_node
    params: dict[str, Param] = {}
    variables: dict[str, object] = {}
    resources: list[Resource] = []
    for node in root.named_children:
        kids = node.named_children
        if node.type == "parameter_declaration":
            decs = _decorators(node)
            p = Param(name=kids[0].text.decode(), line=node.start_point.row + 1, type=kids[1].text.decode())
            if len(kids) > 2:
                p.default, p.has_default = value(kids[2]), True
            if "allowed" in decs and decs["allowed"] and isinstance(decs["allowed"][0], list):
                p.allowed = decs["allowed"][0]
            p.decorators = decs
            params[p.name] = p
        elif node.type == "variable_declaration":
            variables[kids[0].text.decode()] = value(kids[-1])
        elif node.type == "resource_declaration":
            body_node, condition = kids[-1], None
            if body_node.type == "if_statement":
                condition = body_node.named_children[0].text.decode()
                body_node = body_node.named_children[-1]
            body = value(body_node) if body_node.type == "object" else {}
            resources.append(
                Resource(
                    symbol=kids[0].text.decode(),
                    type=string_literal(kids[1]) or kids[1].text.decode(),
                    line=node.start_point.row + 1,
                    body=body,
                    condition=condition,
                    existing=any(c.type == "existing" for c in node.children),
                )
            )
    return Declarations(path=path, params=params, variables=variables, resources=resources)


def syntax_errors(path: Path) -> list[str]:
    """`file:line:col: message` for every ERROR or MISSING node (1-based line and column)."""
    source = path.read_bytes()
    tree = PARSER.parse(source)
    errors: list[str] = []
    if not tree.root_node.has_error:
        return errors
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if not node.has_error:
            continue
        line, col = node.start_point.row + 1, node.start_point.column + 1
        if node.is_missing:
            errors.append(f"{path}:{line}:{col}: missing {node.type!r}")
            continue
        if node.is_error:
            text = source[node.start_byte : node.end_byte].decode(errors="replace")
            first = text.strip().splitlines()[0][:60] if text.strip() else ""
            errors.append(f"{path}:{line}:{col}: syntax error near {first!r}")
            # Children of an ERROR node repeat the same problem; report it once.
            continue
        stack.extend(reversed(node.children))
    return sorted(errors, key=_position)


def _position(message: str) -> tuple[str, int, int]:
    file, line, col, _ = message.split(":", 3)
    return file, int(line), int(col)


def bicep_files(args: list[str]) -> list[Path]:
    roots = [Path(a) for a in args] or [Path("infra")]
    files: list[Path] = []
    for root in roots:
        files.extend(sorted(root.rglob("*.bicep")) if root.is_dir() else [root])
    return files


def main(argv: list[str]) -> int:
    files = bicep_files(argv)
    if not files:
        print("bicep_syntax: no .bicep files found", file=sys.stderr)
        return 1
    errors = [e for f in files for e in syntax_errors(f)]
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"bicep_syntax: {len(errors)} syntax error(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"OK bicep syntax: {len(files)} file(s) parse cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
