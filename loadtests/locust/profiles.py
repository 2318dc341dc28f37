"""Load profiles (``loadtests/profiles/<name>.toml``) as the Locust shape reads them.

The same files drive the goose ``loadgen`` binary, so this module follows its rules: stage
durations are per stage (not cumulative), a stage without ``spawn_rate`` holds the previous
stage's user count, ``--scale`` multiplies user counts (rounded, at least 1 where the stage had
users) and ``--time-scale`` multiplies durations. It has no Locust dependency, so it can be
checked on its own::

    python loadtests/locust/profiles.py staged --json --scale 0.01 --at 0 --at 130

prints the parsed profile and what the shape's ``tick()`` answers at the given times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # pragma: no cover - older Pythons
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PROFILE = "staged"
# The profiles folder next to this one: loadtests/locust/../profiles.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ProfileError(Exception):
    """A profile that cannot be found or read; the message says what to fix."""


@dataclass(frozen=True)
class Stage:
    duration_seconds: float
    users: int
    # None for a hold stage: the user count stays what the previous stage reached.
    spawn_rate: float | None
    # Requests/s target of loadgen's open model; Locust paces users with it (see locustfile).
    rate: float | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    wait_seconds: tuple[float, float]
    stages: tuple[Stage, ...]

    @property
    def total_seconds(self) -> float:
        return sum(s.duration_seconds for s in self.stages)

    def stage_at(self, run_time: float) -> tuple[int, Stage] | None:
        """The stage (index, stage) running at ``run_time`` seconds, or None after the last."""
        end = 0.0
        for i, stage in enumerate(self.stages):
            end += stage.duration_seconds
            if run_time < end:
                return i, stage
        return None

    def tick(self, run_time: float) -> tuple[int, float] | None:
        """What ``LoadTestShape.tick()`` answers: (users, spawn_rate), or None when done.

        A hold stage answers the previous stage's spawn rate: the user count does not change,
        so the rate changes nothing, and Locust needs a positive one.
        """
        found = self.stage_at(run_time)
        if found is None:
            return None
        i, stage = found
        return stage.users, self.effective_spawn_rate(i)

    def effective_spawn_rate(self, index: int) -> float:
        for stage in reversed(self.stages[: index + 1]):
            if stage.spawn_rate is not None:
                return stage.spawn_rate
        return 1.0  # a leading hold at 0 users: nothing to spawn

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "wait_seconds": list(self.wait_seconds),
            "stages": [
                {
                    "duration_seconds": s.duration_seconds,
                    "users": s.users,
                    "spawn_rate": s.spawn_rate,
                    "rate": s.rate,
                }
                for s in self.stages
            ],
        }


def profiles_dir() -> Path:
    """``$LOADGEN_PROFILES_DIR`` if set, else ``loadtests/profiles``."""
    env = os.environ.get("LOADGEN_PROFILES_DIR")
    return Path(env) if env else DEFAULT_DIR


def available(directory: Path | None = None) -> list[str]:
    directory = directory or profiles_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml"))


def load(
    name: str,
    scale: float = 1.0,
    time_scale: float = 1.0,
    directory: Path | None = None,
    rate: float | None = None,
) -> Profile:
    """Reads profile ``name`` and applies ``scale`` (users) and ``time_scale`` (durations).

    ``name`` is a file stem in the profiles folder (``staged``), or a path (anything with a ``/``
    or ending in ``.toml``), as in loadgen. A stage's ``rate`` is multiplied by ``scale``;
    ``rate``, when given, replaces every stage's rate unscaled (loadgen's ``--rate``).

    The spawn rate is multiplied by ``scale / time_scale`` so that a ramp fills the same share of
    its (shortened) stage with the (fewer) users, as in the full-size profile.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ProfileError(f"--scale must be a positive number, got {scale}")
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ProfileError(f"--time-scale must be a positive number, got {time_scale}")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ProfileError(f"--rate must be a positive number of requests/s, got {rate}")
    directory = directory or profiles_dir()
    path = Path(name) if ("/" in name or name.endswith(".toml")) else directory / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(available(directory)) or "none"
        raise ProfileError(
            f"no profile {name!r} in {directory} (available: {names}); "
            f"add {directory}/{name}.toml or choose another with --profile"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    return parse(path.stem, data, scale, time_scale, where=str(path), rate_override=rate)


def parse(
    name: str,
    data: dict,
    scale: float = 1.0,
    time_scale: float = 1.0,
    where: str = "",
    rate_override: float | None = None,
) -> Profile:
    where = where or name

    def fail(field: str, why: str) -> ProfileError:
        return ProfileError(f"{where}: {field}: {why}")

    def number(value, field: str, minimum: float, strict: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(field, f"expected a number, got {value!r}")
        if value < minimum or (strict and value == minimum):
            raise fail(field, f"must be {'>' if strict else '>='} {minimum}, got {value}")
        return float(value)

    known = {"description", "wait_seconds", "stages"}
    for key in data:
        if key not in known:
            raise fail(key, f"unknown field (expected {', '.join(sorted(known))})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {description!r}")

    wait = data.get("wait_seconds")
    if not (isinstance(wait, list) and len(wait) == 2):
        raise fail("wait_seconds", f"expected [min, max] in seconds, got {wait!r}")
    wait_min = number(wait[0], "wait_seconds[0]", 0)
    wait_max = number(wait[1], "wait_seconds[1]", 0)
    if wait_max < wait_min:
        raise fail("wait_seconds", f"max {wait_max} is below min {wait_min}")

    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise fail("stages", "expected at least one [[stages]] table")
    stages = []
    previous_users = 0
    stage_keys = {"duration_seconds", "users", "spawn_rate", "rate"}
    for i, raw in enumerate(raw_stages):
        at = f"stages[{i}]"
        if not isinstance(raw, dict):
            raise fail(at, "expected a [[stages]] table")
        for key in raw:
            if key not in stage_keys:
                raise fail(f"{at}.{key}", f"unknown field (expected {', '.join(sorted(stage_keys))})")
        for key in ("duration_seconds", "users"):
            if key not in raw:
                raise fail(f"{at}.{key}", "missing")
        duration = number(raw["duration_seconds"], f"{at}.duration_seconds", 0, strict=True)
        users = raw["users"]
        if isinstance(users, bool) or not isinstance(users, int) or users < 0:
            raise fail(f"{at}.users", f"expected a whole number >= 0, got {users!r}")
        spawn_rate = raw.get("spawn_rate")
        if spawn_rate is None:
            if users != previous_users:
                raise fail(
                    f"{at}.spawn_rate",
                    f"missing, so the stage holds the previous {previous_users} users, "
                    f"but users = {users}; add spawn_rate to move to {users}",
                )
        else:
            spawn_rate = number(spawn_rate, f"{at}.spawn_rate", 0, strict=True)
        rate = raw.get("rate")
        if rate is not None:
            rate = number(rate, f"{at}.rate", 0, strict=True)
        previous_users = users

        scaled_users = round(users * scale)
        if users > 0:
            scaled_users = max(1, scaled_users)
        stages.append(
            Stage(
                duration_seconds=_tidy(duration * time_scale),
                users=scaled_users,
                spawn_rate=None if spawn_rate is None else _tidy(spawn_rate * scale / time_scale),
                rate=rate_override if rate_override is not None else None if rate is None else _tidy(rate * scale),
            )
        )
    if all(raw["users"] == 0 for raw in raw_stages):
        raise fail("stages", "every stage has 0 users: nothing would run")
    return Profile(name, description, (wait_min, wait_max), tuple(stages))


def _tidy(x: float) -> float:
    """Drops float noise from scaling (0.1 / 0.01 = 10.000000000000002) so plans read cleanly."""
    return float(f"{x:.9g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a load profile as the Locust shape reads it.")
    parser.add_argument("profile", nargs="?", default=os.environ.get("LOADGEN_PROFILE", DEFAULT_PROFILE))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=None, help="requests/s replacing every stage's rate")
    parser.add_argument("--at", type=float, action="append", default=[], help="print tick() at this run time (s)")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        profile = load(args.profile, args.scale, args.time_scale, rate=args.rate)
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ticks = [profile.tick(t) for t in args.at]
    if args.json:
        print(json.dumps({**profile.to_json(), "ticks": ticks}))
        return 0
    print(f"{profile.name}: {profile.description} (wait {profile.wait_seconds[0]}-{profile.wait_seconds[1]} s)")
    for i, s in enumerate(profile.stages):
        how = "hold" if s.spawn_rate is None else f"spawn {s.spawn_rate}/s"
        rate = "" if s.rate is None else f", rate {s.rate}/s"
        print(f"  stage {i}: {s.duration_seconds} s, {s.users} users, {how}{rate}")
    for t, tick in zip(args.at, ticks):
        print(f"  tick({t}) = {tick}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
