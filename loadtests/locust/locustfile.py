"""The original lab's Locust user, driven by the shared load profiles (``loadtests/profiles``).

    locust -f loadtests/locust/locustfile.py --host http://127.0.0.1:8000 --profile staged
    locust -f loadtests/locust/locustfile.py --host URL --headless --profile spike --scale 0.01

Options (as loadgen's): ``--profile NAME`` (default ``$LOADGEN_PROFILE``, else ``staged``; or a path to a ``.toml``),
``--scale F`` (user counts x F, rounded, at least 1 where a stage has users), ``--time-scale F``
(stage durations x F), ``--rate R`` (requests/s for every stage, see ``profile_wait``). Profiles are read from ``$LOADGEN_PROFILES_DIR``, else
``loadtests/profiles``. The shape class owns the run: ``-u``, ``-r`` and ``-t`` are ignored.

Two user classes with the same tasks: ``LabUser`` (``HttpUser``, the original's, the default) and
``FastLabUser`` (``FastHttpUser``, cheaper per request). Name one on the command line to choose
(``locust -f ... FastLabUser``), or set ``LOCUST_FAST=1`` to make ``FastLabUser`` the default.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time

from locust import FastHttpUser, HttpUser, LoadTestShape, events
from locust.runners import WorkerRunner

# Locust puts this file's folder on sys.path, so the sibling module imports as is.
import profiles
from profiles import Profile, ProfileError

log = logging.getLogger("chaos-lab")


class _State:
    """The profile of the current (or next) test run, shared by the shape and the users."""

    profile: Profile | None = None


# ---- what one user does -------------------------------------------------------------------


def check_health(user) -> None:
    """GET /health: a non-2xx answer or a body saying ``"status": "unhealthy"`` is a failure."""
    with user.client.get("/health", name="/health", catch_response=True) as r:
        try:
            body = r.json()
        except Exception:
            body = None
        status = body.get("status") if isinstance(body, dict) else None
        if status == "unhealthy":
            reason = body.get("error") or (body.get("redis") or {}).get("error") or "no reason given"
            r.failure(f"unhealthy (HTTP {r.status_code}): {reason}")
        elif not 200 <= (r.status_code or 0) < 300:
            r.failure(f"HTTP {r.status_code}: {str(getattr(r, 'text', '') or '')[:200]}")
        elif body is None:
            r.failure(f"HTTP {r.status_code} with a body that is not JSON")
        else:
            r.success()


def index(user) -> None:
    """GET /: the app's page, which reads (or creates) the sample in Redis."""
    user.client.get("/", name="/")


def chaos_status(user) -> None:
    """GET /chaos/status: which faults are active."""
    user.client.get("/chaos/status", name="/chaos/status")


# Weights of the original lab: health 3, index 5, chaos status 1.
LAB_TASKS = {check_health: 3, index: 5, chaos_status: 1}


def profile_wait(user) -> float:
    """Think time between two tasks: uniform in the profile's ``wait_seconds``.

    While a stage has a ``rate`` (loadgen's open-model target, requests/s), each user instead
    paces itself at ``rate / users`` tasks/s (Locust's ``constant_throughput``), so the users
    together approach ``rate`` as long as responses are faster than the pacing. Locust stays a
    closed model: a slow service lowers the rate rather than piling up requests. Only the
    process that runs the shape (local or master) knows the stage, so workers of a distributed
    run use ``wait_seconds``.
    """
    profile = _State.profile
    low, high = profile.wait_seconds if profile else (1.0, 3.0)
    stage = None
    shape = user.environment.shape_class
    if profile and shape is not None and not isinstance(user.environment.runner, WorkerRunner):
        found = profile.stage_at(shape.get_run_time())
        stage = found[1] if found else None
    if stage is None or stage.rate is None:
        user._lab_last_run = None
        return random.uniform(low, high)

    interval = max(1, user.environment.runner.user_count) / stage.rate
    now = time.monotonic()
    last_run, last_wait = getattr(user, "_lab_last_run", None), getattr(user, "_lab_last_wait", 0.0)
    task_time = 0.0 if last_run is None else now - last_run - last_wait
    wait = max(0.0, interval - task_time)
    user._lab_last_run, user._lab_last_wait = now, wait
    return wait


class _LabBehaviour:
    """Settings both user classes share (a mixin, so each keeps its own client class)."""

    wait_time = profile_wait


class LabUser(_LabBehaviour, HttpUser):
    """The original lab's user: ``requests``-based ``HttpUser``."""

    tasks = LAB_TASKS  # per class: Locust drops the weights of a dict inherited from a mixin


class FastLabUser(_LabBehaviour, FastHttpUser):
    """The same user on ``FastHttpUser`` (geventhttpclient): several times cheaper per request."""

    tasks = LAB_TASKS


# ---- the load shape -----------------------------------------------------------------------


class ProfileShape(LoadTestShape):
    """Users over time from the chosen profile: ``(users, spawn_rate)`` per stage, then stop."""

    def tick(self):
        profile = _State.profile
        if profile is None:
            return None
        return profile.tick(self.get_run_time())


# ---- command line -------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    # Locust >= 2.3x has its own --profile ("group test runs"); reuse it: same word, same value.
    if "--profile" not in getattr(parser, "_option_string_actions", {}):
        parser.add_argument("--profile", type=str, default=None, help="load profile (loadtests/profiles/NAME.toml)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        include_in_web_ui=True,
        help="multiply the profile's user counts (rounded, at least 1 where a stage has users)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        include_in_web_ui=True,
        help="multiply the profile's stage durations",
    )
    parser.add_argument(
        "--rate",
        type=str,
        default="",
        include_in_web_ui=True,
        help="requests/s replacing every stage's rate (loadgen's --rate; see LabUser pacing)",
    )


def _load_profile(options) -> Profile:
    name = getattr(options, "profile", None) or os.environ.get("LOADGEN_PROFILE") or profiles.DEFAULT_PROFILE
    rate = float(options.rate) if getattr(options, "rate", "") not in (None, "") else None
    return profiles.load(name, float(options.scale), float(options.time_scale), rate=rate)


def _describe(p: Profile) -> str:
    stages = ", ".join(
        f"({s.duration_seconds:g} s, {s.users} users, {'hold' if s.spawn_rate is None else f'{s.spawn_rate:g}/s'})"
        for s in p.stages
    )
    return f"profile {p.name}: {p.description}; stages {stages}; wait {p.wait_seconds[0]:g}-{p.wait_seconds[1]:g} s"


def _default_user_class(environment) -> None:
    """Runs one class, not both, when none is named: LabUser, or FastLabUser if LOCUST_FAST=1."""
    options = environment.parsed_options
    if options is None or getattr(options, "user_classes", None) or getattr(options, "class_picker", False):
        return
    chosen = FastLabUser if os.environ.get("LOCUST_FAST", "") in ("1", "true", "yes") else LabUser
    if chosen in environment.user_classes:
        environment.user_classes[:] = [chosen]


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    _default_user_class(environment)
    if environment.parsed_options is None:  # used as a library: the caller sets _State.profile
        return
    try:
        _State.profile = _load_profile(environment.parsed_options)
    except ProfileError as e:
        log.error("%s", e)
        sys.exit(2)
    if not isinstance(environment.runner, WorkerRunner):
        log.info("%s", _describe(_State.profile))


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    # The web UI can change --profile/--scale/--time-scale between runs: read them again.
    if environment.parsed_options is None:
        return
    try:
        _State.profile = _load_profile(environment.parsed_options)
    except ProfileError as e:
        log.error("%s", e)
        _State.profile = None  # the shape then stops the run at once
