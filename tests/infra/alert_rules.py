"""Check that infra/ ships the original lab's alerts: metric alerts on the container app's platform
metrics, evaluated every minute.

Reads the Bicep with tree-sitter (bicep_syntax.declarations), no Bicep CLI or Azure needed:
1. exactly one `Microsoft.Insights/metricAlerts` rule per metric in EXPECTED (Requests with
   statusCodeCategory = 5xx, total > 5; ResponseTime, average > 5000 ms), with the criterion's
   namespace, aggregation, operator, threshold and dimensions as listed;
2. each of them: windowSize PT5M, evaluationFrequency PT1M, enabled, location global,
   SingleResourceMultipleMetricCriteria, a severity 0-4, unconditional, scoped to exactly the id of
   a `Microsoft.App/containerApps` resource of the same file, and notifying the file's action
   group when it has one;
3. a threshold given as a param is read from its default, or from what infra/main.bicep passes for
   it, and the module is called from main.bicep without a condition;
4. log alerts (`scheduledQueryRules`), if any, are an option: `if (flag)`, a bool param that is
   false unless set (its default, or what main.bicep passes for it, resolves to false).
Usage: python tests/infra/alert_rules.py   (from the repository root)
"""

from __future__ import annotations

import sys
from pathlib import Path

from bicep_syntax import Expr, declarations, parse, string_literal, value

INFRA = Path("infra")
MAIN_BICEP = INFRA / "main.bicep"

METRIC_ALERT = "Microsoft.Insights/metricAlerts@"
LOG_ALERT = "Microsoft.Insights/scheduledQueryRules@"
CONTAINER_APP = "Microsoft.App/containerApps@"
ACTION_GROUP = "Microsoft.Insights/actionGroups@"

NAMESPACE = "microsoft.app/containerapps"
CRITERIA_TYPE = "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
RULE = {"windowSize": "PT5M", "evaluationFrequency": "PT1M", "enabled": True}
EXPECTED = {
    "Requests": {
        "timeAggregation": "Total",
        "operator": "GreaterThan",
        "threshold": 5,
        "dimensions": [{"name": "statusCodeCategory", "operator": "Include", "values": ["5xx"]}],
    },
    "ResponseTime": {
        "timeAggregation": "Average",
        "operator": "GreaterThan",
        "threshold": 5000,
    },
}


def module_calls() -> dict[Path, dict]:
    """infra/modules/x.bicep -> {'condition': str | None, 'params': {...}} from main.bicep."""
    calls: dict[Path, dict] = {}
    for node in parse(MAIN_BICEP).root_node.named_children:
        if node.type != "module_declaration":
            continue
        kids = node.named_children
        path = string_literal(kids[1])
        body, condition = kids[-1], None
        if body.type == "if_statement":
            condition = body.named_children[0].text.decode()
            body = body.named_children[-1]
        if path is None or body.type != "object":
            continue
        calls[(MAIN_BICEP.parent / path)] = {"condition": condition, "params": value(body).get("params") or {}}
    return calls


def main() -> int:
    problems: list[str] = []
    main_decls = declarations(MAIN_BICEP)
    calls = module_calls()
    found: dict[str, list[str]] = {metric: [] for metric in EXPECTED}

    for path in sorted(INFRA.rglob("*.bicep")):
        decls = declarations(path)
        apps = {r.symbol for r in decls.resources if r.type.startswith(CONTAINER_APP)}
        groups = [r.symbol for r in decls.resources if r.type.startswith(ACTION_GROUP)]
        call = calls.get(path)

        def resolve(v):
            """A literal, a param's default, or what main.bicep passes for that param."""
            if isinstance(v, Expr) and call is not None and v in call["params"]:
                return main_decls.symbol_value(call["params"][v])
            return decls.symbol_value(v)

        for res in decls.resources:
            where = f"{path}:{res.line}: {res.symbol}"
            if res.type.startswith(LOG_ALERT):
                flag = (res.condition or "").strip("() ")
                param = decls.params.get(flag)
                if param is None or param.type != "bool" or resolve(Expr(flag)) is not False:
                    got = f"if {res.condition}" if res.condition else "no condition"
                    problems.append(
                        f"{where}: log alert rules are an option: `if (<bool param>)` whose default (here or "
                        f"as {MAIN_BICEP} passes it) is false; got {got}"
                    )
            if not res.type.startswith(METRIC_ALERT):
                continue
            props = res.body.get("properties") or {}
            criteria = props.get("criteria") or {}
            all_of = criteria.get("allOf") or []
            metrics = [c.get("metricName") for c in all_of if isinstance(c, dict)]
            if len(all_of) != 1 or metrics[0] not in EXPECTED:
                problems.append(f"{where}: expected one criterion on one of {sorted(EXPECTED)}, found {metrics}")
                continue
            metric, crit = metrics[0], all_of[0]
            found[metric].append(where)

            if res.condition is not None:
                problems.append(f"{where}: the {metric} alert must always be deployed, not `if {res.condition}`")
            if call is None and path != MAIN_BICEP:
                problems.append(f"{where}: {path} is not a module of {MAIN_BICEP}, so the alert is never deployed")
            elif call is not None and call["condition"] is not None:
                problems.append(f"{where}: {MAIN_BICEP} calls {path} only `if {call['condition']}`")
            if res.body.get("location") != "global":
                problems.append(f"{where}: location must be 'global', got {res.body.get('location')!r}")
            for key, want in RULE.items():
                if resolve(props.get(key)) != want:
                    problems.append(f"{where}: {key} must be {want!r}, got {props.get(key)!r}")
            severity = resolve(props.get("severity"))
            if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 4:
                problems.append(f"{where}: severity must be 0-4, got {props.get('severity')!r}")
            if criteria.get("odata.type") != CRITERIA_TYPE:
                problems.append(
                    f"{where}: criteria.odata.type must be {CRITERIA_TYPE!r}, got {criteria.get('odata.type')!r}"
                )

            scopes = props.get("scopes")
            app_ids = {f"{a}.id" for a in apps}
            if not (isinstance(scopes, list) and len(scopes) == 1 and scopes[0] in app_ids):
                wanted = " or ".join(sorted(app_ids)) or "no Microsoft.App/containerApps resource in this file"
                problems.append(f"{where}: scopes must be exactly the container app's id ({wanted}), got {scopes!r}")

            namespace = crit.get("metricNamespace")
            if not isinstance(namespace, str) or namespace.lower() != NAMESPACE:
                problems.append(f"{where}: metricNamespace must be {NAMESPACE!r}, got {namespace!r}")
            for key, want in EXPECTED[metric].items():
                written = crit.get(key)
                if key == "dimensions" and isinstance(written, list):
                    got = [{k: resolve(v) for k, v in d.items()} if isinstance(d, dict) else d for d in written]
                else:
                    got = resolve(written)
                if got != want:
                    shown = f"{written!r}" + (f" (= {got!r})" if got != written else "")
                    problems.append(f"{where}: {metric} criterion {key} must be {want!r}, got {shown}")
            if "dimensions" not in EXPECTED[metric] and crit.get("dimensions"):
                problems.append(f"{where}: {metric} criterion must have no dimensions, got {crit.get('dimensions')!r}")

            if groups:
                actions = props.get("actions")
                text = str(decls.variables.get(actions, actions)) if isinstance(actions, Expr) else str(actions)
                if not any(f"{g}.id" in text for g in groups):
                    problems.append(
                        f"{where}: actions must notify the action group ({', '.join(groups)}), got {actions!r}"
                    )

    for metric, wheres in found.items():
        if not wheres:
            problems.append(f"{INFRA}: no Microsoft.Insights/metricAlerts rule on the {metric} metric")
        elif len(wheres) > 1:
            problems.append(
                f"{INFRA}: {len(wheres)} metricAlerts rules on {metric} ({'; '.join(wheres)}); expected one"
            )

    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"alert_rules: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        "OK alert rules: metricAlerts on Requests (5xx, total > 5) and ResponseTime (average > 5000 ms), "
        "PT5M window, every PT1M, scoped to the container app"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
