"""Resolve infra/main.parameters.json the way azd does, with an empty azd environment, and check what
a plain `azd up` (no `azd env set`) would deploy.

azd reads the file's text, substitutes `${NAME}`, `${NAME=default}`, `${NAME:=default}` and
`${NAME:-default}` (github.com/drone/envsubst), parses the JSON, then converts each value to the
type of its Bicep parameter (armParameterFileValue in azd's Bicep provider): a `bool` takes what
Go's strconv.ParseBool accepts, an `int` a base-10 integer, a `string` its value, where an empty
string counts as "not given" unless the Bicep default is a non-empty string. A value not given
(or not convertible) falls back to the Bicep default, or azd prompts when there is none.

Checks, for every parameter in the file:
1. every `${...}` is one of the forms above, and the substituted text is JSON;
2. the parameter is declared in infra/main.bicep;
3. a `bool`/`int` default converts (else azd would quietly drop it);
4. the value is one of the parameter's @allowed values, if it has any;
5. where main.bicep has a literal default, the file's default resolves to that same value: one
   default, in one place (a `${REVISIONS_MODE=Single}` over a Bicep `'Multiple'` is how a plain
   `azd up` got an app whose deploy-fault undo fails);
6. the values in EXPECTED (revisionsMode = Multiple).
Usage: python tests/infra/azd_parameters.py   (from the repository root)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bicep_syntax import Expr, declarations

MAIN_BICEP = Path("infra/main.bicep")
PARAMETERS = Path("infra/main.parameters.json")

# What a plain `azd up` must deploy, and why.
EXPECTED = {
    "revisionsMode": (
        "Multiple",
        "a deploy fault's undo moves traffic back to the previous revision by name, which Single "
        "revision mode refuses (docs/azure.md#deploy-faults)",
    ),
}

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_INNER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(=|:=|:-)(.*))?$", re.DOTALL)
# Go's strconv.ParseBool.
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
PROMPT = object()  # azd would prompt for the value


def substitute(text: str, env: dict[str, str], problems: list[str]) -> str:
    """envsubst over the whole file, as azd does. `env` holds the set variables."""

    def one(m: re.Match) -> str:
        inner = _INNER.match(m.group(1))
        line = text.count("\n", 0, m.start()) + 1
        if inner is None:
            problems.append(
                f"{PARAMETERS}:{line}: unsupported substitution {m.group(0)} (use ${{NAME}} or ${{NAME=default}})"
            )
            return ""
        name, op, default = inner.groups()
        if op is None:
            return env.get(name, "")
        if op == "=":
            return env[name] if name in env else default
        return env.get(name) or default  # := and :- also replace an empty value

    return _REFERENCE.sub(one, text)


def convert(bicep_type: str, raw, bicep_default, has_default: bool):
    """azd's armParameterFileValue, then the fallback: (value, note). PROMPT when azd would ask."""
    value = raw
    if isinstance(raw, str):
        value = None
        if bicep_type == "bool":
            value = True if raw in _TRUE else False if raw in _FALSE else None
        elif bicep_type == "int":
            value = int(raw) if re.fullmatch(r"[+-]?[0-9]+", raw) else None
        elif bicep_type == "string":
            if raw != "" or (isinstance(bicep_default, str) and has_default and bicep_default != ""):
                value = raw
        else:
            value = raw
    if value is not None:
        return value, "from the parameters file"
    if has_default:
        return bicep_default, "main.bicep default"
    return PROMPT, "azd prompts (or the azd environment provides it)"


def main() -> int:
    problems: list[str] = []
    text = PARAMETERS.read_text(encoding="utf-8")
    substituted = substitute(text, {}, problems)
    try:
        doc = json.loads(substituted)
    except json.JSONDecodeError as err:
        print(f"{PARAMETERS}: not JSON after substitution: {err}", file=sys.stderr)
        return 1
    params_in_file = doc.get("parameters") or {}
    raw_params = json.loads(text).get("parameters") or {}
    decls = declarations(MAIN_BICEP)

    resolved: dict[str, object] = {}
    matching_defaults = 0
    for name, entry in params_in_file.items():
        where = f"{PARAMETERS}: parameter {name}"
        param = decls.params.get(name)
        if param is None:
            problems.append(f"{where} is not a param of {MAIN_BICEP}")
            continue
        raw = entry.get("value") if isinstance(entry, dict) else None
        template = (raw_params.get(name) or {}).get("value")
        if param.type in ("bool", "int") and isinstance(raw, str) and raw != "":
            ok, _ = convert(param.type, raw, None, False)
            if ok is PROMPT:
                problems.append(
                    f"{where}: {template!r} resolves to {raw!r}, which azd cannot convert to {param.type} "
                    f"(it would silently use the default or prompt)"
                )
        value, source = convert(param.type, raw, param.default, param.has_default)
        resolved[name] = value
        if value is PROMPT:
            continue
        if param.allowed is not None and value not in param.allowed:
            problems.append(f"{where}: {template!r} resolves to {value!r}, not one of @allowed {param.allowed}")
        if param.has_default and not isinstance(param.default, Expr):
            if value != param.default or type(value) is not type(param.default):
                problems.append(
                    f"{where}: {template!r} resolves to {value!r} in an empty azd environment, but "
                    f"{MAIN_BICEP}:{param.line} declares the default {param.default!r}; a plain `azd up` "
                    f"would deploy {value!r} (make the file's default the Bicep one)"
                )
            else:
                matching_defaults += 1

    for name, (want, why) in EXPECTED.items():
        if name not in decls.params:
            problems.append(f"{MAIN_BICEP}: no param {name}")
            continue
        got = resolved.get(name)
        if got is None:  # not in the file: the Bicep default applies
            got = decls.params[name].default
        if got != want:
            shown = "a prompt" if got is PROMPT else repr(got)
            problems.append(
                f"{PARAMETERS}: {name} resolves to {shown} with an empty azd environment; it must be "
                f"{want!r}: {why}"
            )

    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"azd_parameters: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    expected = ", ".join(f"{n} = {resolved.get(n, decls.params[n].default)}" for n in EXPECTED)
    print(
        f"OK azd parameters: {len(params_in_file)} parameter(s) resolve in an empty azd environment; "
        f"{matching_defaults} equal main.bicep's defaults; {expected}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
