"""Check azure.yaml: it parses, and every path it names exists.

- infra.path holds <infra.module>.bicep and <infra.module>.parameters.json;
- each service's project directory, docker.path and docker.context exist (docker paths are relative
  to the project, as azd resolves them);
- each service with host containerapp has a resource tagged `'azd-service-name': '<service>'` in
  infra/, or azd deploy would not find where to deploy it.
Usage: python tests/infra/azure_yaml.py   (from the repository root)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

AZURE_YAML = Path("azure.yaml")


def problems_in(doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return [f"{AZURE_YAML}: top level is not a mapping"]
    problems = []
    if not doc.get("name"):
        problems.append(f"{AZURE_YAML}: `name` is missing")

    infra = doc.get("infra") or {}
    infra_dir = Path(infra.get("path", "infra"))
    module = infra.get("module", "main")
    for required in (infra_dir / f"{module}.bicep", infra_dir / f"{module}.parameters.json"):
        if not required.is_file():
            problems.append(f"{AZURE_YAML}: infra file {required} does not exist")

    services = doc.get("services") or {}
    if not services:
        problems.append(f"{AZURE_YAML}: no services")
    bicep_text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(infra_dir.rglob("*.bicep")))
    for name, svc in services.items():
        svc = svc or {}
        project = Path(svc.get("project", "."))
        if not project.is_dir():
            problems.append(f"{AZURE_YAML}: services.{name}.project {project} is not a directory")
            continue
        docker = svc.get("docker") or {}
        dockerfile = project / docker.get("path", "./Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"{AZURE_YAML}: services.{name}.docker.path {dockerfile} does not exist")
        context = project / docker.get("context", ".")
        if not context.is_dir():
            problems.append(f"{AZURE_YAML}: services.{name}.docker.context {context} is not a directory")
        if svc.get("host") == "containerapp" and f"'azd-service-name': '{name}'" not in bicep_text:
            problems.append(
                f"{AZURE_YAML}: service {name} has no resource tagged 'azd-service-name': '{name}' in {infra_dir}/"
            )
    return problems


def main() -> int:
    try:
        doc = yaml.safe_load(AZURE_YAML.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        print(f"{AZURE_YAML}: {err}", file=sys.stderr)
        return 1
    problems = problems_in(doc)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"OK azure.yaml: parses; infra and {len(doc['services'])} service(s) point at existing paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
