"""Check that the names the app reads and the names the infrastructure provides agree.

1. Every azd value the service or the operator CLI reads (an `env = "NAME"` or `env::var("NAME")`
   in src/**/*.rs whose NAME starts with AZURE_ or SERVICE_) is an output of infra/main.bicep, so
   `eval "$(azd env get-values)"` gives the CLI everything it needs. Names azd sets itself, or that
   are settings rather than deployment facts, are in NOT_AZD_OUTPUTS.
2. Every environment variable set on a container or job in infra/**/*.bicep (an `env: [...]` entry's
   `name`) is read by the app (same patterns in src/), or is one the Azure/OpenTelemetry SDKs read
   (KNOWN_SDK_VARIABLES, KNOWN_SDK_PREFIXES).

A typo on either side fails with the variable and the file:line where it was found.
Usage: python tests/infra/azd_outputs.py   (from the repository root)
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from bicep_syntax import parse

SRC = Path("src")
INFRA = Path("infra")
MAIN_BICEP = INFRA / "main.bicep"

AZD_PREFIXES = ("AZURE_", "SERVICE_")
# Read by the app but not main.bicep outputs: azd sets AZURE_SUBSCRIPTION_ID and AZURE_ENV_NAME in
# every environment itself; the others are settings with defaults (the ARM endpoint override exists
# for tests, the NSG rule port is the Redis port), not facts of a deployment.
NOT_AZD_OUTPUTS = {
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_ENV_NAME",
    "AZURE_RESOURCE_MANAGER_ENDPOINT",
    "AZURE_NSG_RULE_PORT",
}
# Set on the container app for an SDK rather than read through our own settings.
KNOWN_SDK_VARIABLES = {"AZURE_CLIENT_ID", "RUST_LOG"}
KNOWN_SDK_PREFIXES = ("OTEL_", "APPLICATIONINSIGHTS_")

READ_PATTERNS = [
    re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"'),  # clap: #[arg(long, env = "NAME")]
    re.compile(r'\benv::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"'),  # std::env::var("NAME")
]


def names_read_by_app() -> dict[str, list[str]]:
    """NAME -> ["src/file.rs:line", ...] for every environment variable src/ reads."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.rs")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern in READ_PATTERNS:
                for name in pattern.findall(line):
                    found[name].append(f"{path}:{lineno}")
    return found


def _children(node, type_: str):
    return [c for c in node.named_children if c.type == type_]


def _literal(node) -> str | None:
    """The text of a string node without interpolation, else None."""
    if node.type != "string" or any(c.type != "string_content" for c in node.named_children):
        return None
    return "".join(c.text.decode() for c in node.named_children)


def main_bicep_outputs() -> set[str]:
    tree = parse(MAIN_BICEP)
    outputs = set()
    for decl in _children(tree.root_node, "output_declaration"):
        ident = _children(decl, "identifier")
        if ident:
            outputs.add(ident[0].text.decode())
    return outputs


def env_names_in_bicep() -> dict[str, list[str]]:
    """NAME -> ["infra/file.bicep:line", ...] for every `env: [ { name: 'NAME' ... } ]` entry."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(INFRA.rglob("*.bicep")):
        stack = [parse(path).root_node]
        while stack:
            node = stack.pop()
            stack.extend(node.named_children)
            if node.type != "object_property" or len(node.named_children) < 2:
                continue
            key, value = node.named_children[0], node.named_children[-1]
            if key.type != "identifier" or key.text != b"env" or value.type != "array":
                continue
            for entry in _children(value, "object"):
                for prop in _children(entry, "object_property"):
                    k, v = prop.named_children[0], prop.named_children[-1]
                    if k.type == "identifier" and k.text == b"name":
                        name = _literal(v)
                        where = f"{path}:{prop.start_point.row + 1}"
                        if name is None:
                            found[f"<non-literal {v.text.decode()}>"].append(where)
                        else:
                            found[name].append(where)
    return found


def main() -> int:
    read = names_read_by_app()
    outputs = main_bicep_outputs()
    env_set = env_names_in_bicep()
    problems: list[str] = []

    for name in sorted(read):
        if name.startswith(AZD_PREFIXES) and name not in NOT_AZD_OUTPUTS and name not in outputs:
            problems.append(
                f"{read[name][0]}: {name} is read by the app/CLI but {MAIN_BICEP} has no "
                f"`output {name}` (azd would not provide it)"
            )

    if not env_set:
        problems.append(f"{INFRA}: no `env: [...]` entries found on any container")
    for name in sorted(env_set):
        if name.startswith("<non-literal"):
            problems.append(f"{env_set[name][0]}: env var name {name[13:-1]} must be a plain string literal")
            continue
        if name in read or name in KNOWN_SDK_VARIABLES or name.startswith(KNOWN_SDK_PREFIXES):
            continue
        problems.append(
            f"{env_set[name][0]}: env var {name} is set on the container but nothing in {SRC}/ reads it "
            f'(no env = "{name}" or env::var("{name}"))'
        )

    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"azd_outputs: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    azd_read = sorted(n for n in read if n.startswith(AZD_PREFIXES))
    print(
        f"OK azd outputs: {len(azd_read)} azd value(s) read by src/ are outputs of {MAIN_BICEP}; "
        f"{len(env_set)} container env var(s) are all read"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
