"""The original lab's Locust users, and a load shape that runs the shared profiles (``loadtests/profiles``).

Without ``--profile``, Locust's own options size the run, as in the original lab::

    locust -f locustfile.py --headless -u 10 -r 2 -t 5m SteadyLoadUser
    locust -f locustfile.py --headless -u 100 -r 50 -t 3m SpikeTestUser
    locust -f locustfile.py --headless -u 50 -r 5 -t 10m ChaosTestUser

With ``--profile NAME`` (or ``$LOADGEN_PROFILE``), the profile's stages drive the run instead
(``-u``, ``-r`` and ``-t`` are then ignored, with a warning)::

    locust -f loadtests/locust/locustfile.py --host http://127.0.0.1:8000 --profile staged
    locust -f loadtests/locust/locustfile.py --host URL --headless --profile spike --scale 0.01

Profile options (as loadgen's): ``--profile NAME`` (a name in ``$LOADGEN_PROFILES_DIR``, else
``loadtests/profiles``, or a path to a ``.toml``), ``--scale F`` (user counts x F, rounded, at
least 1 where a stage has users), ``--time-scale F`` (stage durations x F), ``--rate R``
(requests/s for every stage, see ``profile_wait``).

User classes (name one or more at the end of the command line; none named runs ``LabUser``):

- ``SteadyLoadUser``, ``SpikeTestUser``, ``ChaosTestUser``: the original lab's classes, with its
  think times and task weights; ``ChaosTestUser`` also POSTs ``/chaos/load``.
- ``LabUser`` (``HttpUser``) and ``FastLabUser`` (``FastHttpUser``, cheaper per request): the
  profile users, whose think time is the profile's ``wait_seconds``. ``LOCUST_FAST=1`` makes
  ``FastLabUser`` the default.

Every class defaults to the service's local address, ``http://127.0.0.1:8000``; ``--host``
(or ``LOCUST_HOST``) overrides it.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time

from locust import FastHttpUser, HttpUser, LoadTestShape, between, events
from locust.runners import WorkerRunner

# Locust puts this file's folder on sys.path, so the sibling module imports as is.
import profiles
from profiles import Profile, ProfileError

log = logging.getLogger("chaos-lab")

# The service's default local address (APP_HOST/APP_PORT); --host or LOCUST_HOST replace it.
DEFAULT_HOST = "http://127.0.0.1:8000"


class _State:
    """The profile of the current (or next) test run, shared by the shape and the users."""

    profile: Profile | None = None
    # Logged once: a chaos user was refused with 423 (kill switch).
    halt_logged: bool = False


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
    """GET /chaos/status: which faults are active. Remembers whether a load or a hang runs."""
    r = user.client.get("/chaos/status", name="/chaos/status")
    try:
        body = r.json()
    except Exception:
        return
    if isinstance(body, dict):
        load, hang = body.get("load"), body.get("hang")
        user.chaos_active = bool(
            (isinstance(load, dict) and load.get("active")) or (isinstance(hang, dict) and hang.get("active"))
        )


CHAOS_LOAD_LEVELS = ("low", "medium", "high")


def _chaos_headers() -> dict | None:
    """``Authorization: Bearer $CHAOS_API_TOKEN`` when set: the service asks for it on ``/chaos/*``."""
    token = os.environ.get("CHAOS_API_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else None


def trigger_load(user) -> None:
    """POST /chaos/load, as the original's chaos user: a random level for 60-180 s.

    Skipped while the user's last ``GET /chaos/status`` showed a load or a hang. 409 (a load
    already runs) is not a failure, as in the original; neither is 423 (the kill switch halted
    chaos: the service refuses on purpose until ``POST /chaos/resume``).
    """
    if getattr(user, "chaos_active", False):
        return
    body = {"level": random.choice(CHAOS_LOAD_LEVELS), "duration_seconds": random.randint(60, 180)}
    with user.client.post(
        "/chaos/load", json=body, name="/chaos/load", headers=_chaos_headers(), catch_response=True
    ) as r:
        if r.status_code in (200, 409):
            r.success()
        elif r.status_code == 423:
            r.success()
            if not _State.halt_logged:
                _State.halt_logged = True
                log.warning("POST /chaos/load: 423, chaos is halted by the kill switch (POST /chaos/resume)")
        elif r.status_code == 401:
            r.failure("HTTP 401: the service has a CHAOS_API_TOKEN; export the same CHAOS_API_TOKEN to Locust")
        else:
            r.failure(f"HTTP {r.status_code}: {str(getattr(r, 'text', '') or '')[:200]}")


# Weights of the original lab: health 3, index 5, chaos status 1.
LAB_TASKS = {check_health: 3, index: 5, chaos_status: 1}


def profile_wait(user) -> float:
    """Think time between two tasks: uniform in the profile's ``wait_seconds`` (1-3 s, the
    original's, when no profile drives the run).

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
    """Settings both profile user classes share (a mixin, so each keeps its own client class)."""

    host = DEFAULT_HOST
    wait_time = profile_wait


class LabUser(_LabBehaviour, HttpUser):
    """The original lab's user: ``requests``-based ``HttpUser``."""

    tasks = LAB_TASKS  # per class: Locust drops the weights of a dict inherited from a mixin


class FastLabUser(_LabBehaviour, FastHttpUser):
    """The same user on ``FastHttpUser`` (geventhttpclient): several times cheaper per request."""

    tasks = LAB_TASKS


# ---- the original lab's user classes ------------------------------------------------------
#
# Their think times and weights are those the original's Locust ran. Its SpikeTestUser
# overrode the index (weight 10) and health (1) tasks of a base class that had them at 5 and 3;
# Locust keeps a base class's tasks, so its spike users ran / 15, /health 4, /chaos/status 1.
# They keep their own think time with a profile too (the profile then only sets the users).


class SteadyLoadUser(HttpUser):
    """The original's steady user: the lab's three requests, 1-3 s apart, no chaos."""

    host = DEFAULT_HOST
    wait_time = between(1, 3)
    tasks = {check_health: 3, index: 5, chaos_status: 1}


class SpikeTestUser(HttpUser):
    """The original's spike user: mostly ``GET /``, 0.1-0.5 s apart."""

    host = DEFAULT_HOST
    wait_time = between(0.1, 0.5)
    tasks = {index: 15, check_health: 4, chaos_status: 1}


class ChaosTestUser(HttpUser):
    """The original's chaos user: the lab's requests 5-10 s apart, and ``POST /chaos/load``."""

    host = DEFAULT_HOST
    wait_time = between(5, 10)
    tasks = {check_health: 3, index: 5, chaos_status: 1, trigger_load: 1}


# ---- the load shape -----------------------------------------------------------------------


class ProfileShape(LoadTestShape):
    """Users over time from the chosen profile: ``(users, spawn_rate)`` per stage, then stop.

    Locust gives a shape class it finds in the locustfile the whole run and ignores ``-u``,
    ``-r`` and ``-t``. So this one is ``abstract`` (Locust does not pick it up), and ``_on_init``
    installs it only when a profile is asked for (``--profile`` or ``$LOADGEN_PROFILE``);
    otherwise Locust's own options drive the run.
    """

    abstract = True

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
        parser.add_argument(
            "--profile", type=str, default=None, help="load profile (loadtests/profiles/NAME.toml) that drives the run"
        )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        include_in_web_ui=True,
        help="with --profile: multiply the profile's user counts (rounded, at least 1 where a stage has users)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        include_in_web_ui=True,
        help="with --profile: multiply the profile's stage durations",
    )
    parser.add_argument(
        "--rate",
        type=str,
        default="",
        include_in_web_ui=True,
        help="with --profile: requests/s replacing every stage's rate (loadgen's --rate; see LabUser pacing)",
    )


def _asked_profile(options) -> tuple[str, str] | None:
    """The profile this run asks for and where it came from, or None: Locust's -u/-r/-t drive."""
    name = getattr(options, "profile", None)
    if name:
        return name, "--profile"
    name = os.environ.get("LOADGEN_PROFILE", "")
    if name:
        return name, "LOADGEN_PROFILE"
    return None


def _load_profile(options) -> Profile:
    asked = _asked_profile(options)
    name = asked[0] if asked else profiles.DEFAULT_PROFILE
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


# Locust's options that a shape makes meaningless (as locust.main.COMMON_OPTIONS).
_SIZING_OPTIONS = (("num_users", "-u/--users"), ("spawn_rate", "-r/--spawn-rate"), ("run_time", "-t/--run-time"))


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    _default_user_class(environment)
    options = environment.parsed_options
    if options is None:  # used as a library: the caller sets _State.profile and the shape
        return
    worker = isinstance(environment.runner, WorkerRunner)
    asked = _asked_profile(options)
    if asked is None:
        # No profile: plain Locust, sized by -u/-r/-t (or the web UI). The profile options
        # have nothing to scale.
        _State.profile = None
        unused = [
            flag
            for flag, given in (
                ("--scale", float(getattr(options, "scale", 1.0)) != 1.0),
                ("--time-scale", float(getattr(options, "time_scale", 1.0)) != 1.0),
                ("--rate", getattr(options, "rate", "") not in (None, "")),
            )
            if given
        ]
        if unused and not worker:
            log.warning("%s: used only with a profile; add --profile NAME (%s)", ", ".join(unused), _profile_names())
        return
    try:
        _State.profile = _load_profile(options)
    except ProfileError as e:
        log.error("%s", e)
        sys.exit(2)
    if worker:  # the master runs the shape; a worker only paces its users with the profile
        return
    if environment.shape_class is None:
        shape = ProfileShape()
        shape.runner = environment.runner
        environment.shape_class = shape
    log.info("%s", _describe(_State.profile))
    ignored = [flag for opt, flag in _SIZING_OPTIONS if getattr(options, opt, None)]
    if ignored:
        log.warning(
            "profile %s (%s) drives the run: %s ignored; without a profile, Locust's options size the run%s",
            _State.profile.name,
            asked[1],
            ", ".join(ignored),
            " (unset LOADGEN_PROFILE)" if asked[1] == "LOADGEN_PROFILE" else "",
        )


def _profile_names() -> str:
    names = profiles.available()
    return "profiles: " + (", ".join(names) if names else "none")


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    # The web UI can change --scale/--time-scale/--rate between runs: read them again.
    options = environment.parsed_options
    if options is None or _asked_profile(options) is None:
        return
    try:
        _State.profile = _load_profile(options)
    except ProfileError as e:
        log.error("%s", e)
        _State.profile = None  # the shape then stops the run at once
