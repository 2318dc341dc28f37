"""Parse every infra/**/*.bicep with tree-sitter-bicep; fail on any syntax error.

A syntax check only (no type or API-version validation: that needs the Bicep CLI, which CI does
not have). Prints `file:line:col: message` for every ERROR or MISSING node and exits 1 if any.
Usage: python tests/infra/bicep_syntax.py [FILE_OR_DIR ...]   (default: infra/)
"""

from __future__ import annotations

import sys
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def parse(path: Path) -> tree_sitter.Tree:
    return PARSER.parse(path.read_bytes())


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
