"""Django settings. Every value comes from the environment, with defaults for the local cluster.

See portal/env.py for the readers; README's "Configuration" section lists the variables.
"""

from __future__ import annotations

from pathlib import Path

from portal.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_optional_secret,
    env_secret,
    env_str,
    url_with_password,
)
from portal.logfiles import FORMAT as LOG_FORMAT
from portal.logfiles import file_handler

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("PORTAL_DEBUG", False)
# A generated development secret is fine on a laptop, never in production.
SECRET_KEY = env_secret("PORTAL_SECRET_KEY", dev_file=VAR_DIR / "secret_key",
                        allow_generate=env_bool("PORTAL_DEV_SECRETS", True))
ALLOWED_HOSTS = env_list("PORTAL_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("PORTAL_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "portal.core",
    "portal.teams",
    "portal.quotas",
    "portal.jobs",
    "portal.nodes",
    "portal.recovery",
    "portal.api",
    "ninja",
]

MIDDLEWARE = [
    # First, so every response gets the CSP, static files and error pages included.
    "portal.core.middleware.SecurityHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files from gunicorn, so the demo needs no separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its process_exception sees view exceptions first (portal/infra/errors.py).
    "portal.core.middleware.ErrorsMiddleware",
]

# Sites behind SSO (Apache mod_auth_*, Shibboleth, OIDC proxies) set PORTAL_REMOTE_USER=true:
# the web server authenticates and passes the Unix login in REMOTE_USER. With a proxy in front
# of gunicorn use PORTAL_REMOTE_USER_HEADER=HTTP_X_REMOTE_USER, and make the proxy overwrite
# that header on every request, or anyone could claim any user.
REMOTE_USER_ENABLED = env_bool("PORTAL_REMOTE_USER", False)
REMOTE_USER_HEADER = env_str("PORTAL_REMOTE_USER_HEADER", "REMOTE_USER")
# Passwords are checked behind the login throttle (portal/core/login_throttle.py).
AUTHENTICATION_BACKENDS = ["portal.core.login_throttle.ThrottledModelBackend"]
if REMOTE_USER_ENABLED:
    MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                      "portal.core.remote_user.RemoteUserMiddleware")
    AUTHENTICATION_BACKENDS.insert(0, "portal.core.remote_user.SsoBackend")

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.quotas.context.my_teams",
            ],
        },
    },
]

# ---- PostgreSQL: the project's own instance (scripts/services.sh), as the unprivileged role
# `portal` with a generated password kept in var/db_password (mode 600). Sites set
# PORTAL_DB_* (and PORTAL_DB_PASSWORD or PORTAL_DB_PASSWORD_FILE) for their own server.
# Timeouts, so that a stalled or locked database ends a request with an error instead of holding
# it: libpq's connect_timeout (it counts whole seconds, at least 2) and, per statement, the
# server's statement_timeout and lock_timeout. Workers run longer statements (the tracker's
# sweep over every active job), so scripts/portal.sh gives them their own values.
DB_CONNECT_TIMEOUT_S = env_int("PORTAL_DB_CONNECT_TIMEOUT", 3, minimum=2)
DB_STATEMENT_TIMEOUT_MS = round(1000 * env_float("PORTAL_DB_STATEMENT_TIMEOUT", 10.0))
DB_LOCK_TIMEOUT_MS = round(1000 * env_float("PORTAL_DB_LOCK_TIMEOUT", 5.0))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env_str("PORTAL_DB_NAME", "portal"),
        "USER": env_str("PORTAL_DB_USER", "portal"),
        "PASSWORD": env_optional_secret("PORTAL_DB_PASSWORD", default_file=VAR_DIR / "db_password"),
        "HOST": env_str("PORTAL_DB_HOST", "127.0.0.1"),
        "PORT": env_int("PORTAL_DB_PORT", 5433),
        "CONN_MAX_AGE": env_int("PORTAL_DB_CONN_MAX_AGE", 60, minimum=0),
        "OPTIONS": {
            "connect_timeout": DB_CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS} -c lock_timeout={DB_LOCK_TIMEOUT_MS}",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---- Redis: the project's own instance on 127.0.0.1:6390, with a password (var/redis_password,
# mode 600). The password is filled into each URL below that carries no credentials of its own.
REDIS_PASSWORD = env_optional_secret("PORTAL_REDIS_PASSWORD", default_file=VAR_DIR / "redis_password")
REDIS_PORT = env_int("PORTAL_REDIS_PORT", 6390, minimum=1)
# Seconds a Redis connect or command may take: a stalled broker or cache must cost a request
# this long at most, never hold it (see the cache and Celery options below).
REDIS_TIMEOUT_S = env_float("PORTAL_REDIS_TIMEOUT", 1.0)
if REDIS_TIMEOUT_S <= 0:
    raise ImproperlyConfiguredEnv(f"PORTAL_REDIS_TIMEOUT={REDIS_TIMEOUT_S}: expected seconds > 0")
PORTAL_REDIS_TIMEOUT_S = REDIS_TIMEOUT_S   # the name portal/infra/cache.py reads


def _redis_url(name: str, db: int, default: str | None = None) -> str:
    url = env_str(name, default or f"redis://127.0.0.1:{REDIS_PORT}/{db}")
    return url_with_password(url, REDIS_PASSWORD)


REDIS_URL = _redis_url("PORTAL_REDIS_URL", 0)
CACHES = {
    "default": {
        # A Redis that fails or stalls is a cache miss, never an error (portal/infra/cache.py).
        "BACKEND": "portal.infra.cache.ForgivingRedisCache",
        "LOCATION": _redis_url("PORTAL_CACHE_URL", 2),
        "OPTIONS": {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("PORTAL_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# htmx and Chart.js come from npm (package.json); `make assets` installs them.
STATICFILES_DIRS = [
    ("vendor/htmx", BASE_DIR / "node_modules/htmx.org/dist"),
    ("vendor/chartjs", BASE_DIR / "node_modules/chart.js/dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("PORTAL_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# ---- security (h4): login throttling, API tokens, Content-Security-Policy
# Failed logins per account (from any address) and per address (over any accounts) within
# PORTAL_LOGIN_WINDOW seconds; reaching either limit refuses logins for PORTAL_LOGIN_LOCKOUT s.
PORTAL_LOGIN_MAX_FAILURES_PER_USER = env_int("PORTAL_LOGIN_MAX_FAILURES_PER_USER", 5, minimum=1)
PORTAL_LOGIN_MAX_FAILURES_PER_IP = env_int("PORTAL_LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1)
PORTAL_LOGIN_WINDOW_S = env_int("PORTAL_LOGIN_WINDOW", 900, minimum=1)
PORTAL_LOGIN_LOCKOUT_S = env_int("PORTAL_LOGIN_LOCKOUT", 900, minimum=1)
# Where the client's address is. Behind a proxy every client would share the proxy's
# REMOTE_ADDR (one user's typos locking everyone out): name a header the proxy always
# overwrites, e.g. HTTP_X_REAL_IP.
PORTAL_CLIENT_IP_HEADER = env_str("PORTAL_CLIENT_IP_HEADER", "REMOTE_ADDR")
# API tokens expire after this many days unless issued with another lifetime (at most the max).
PORTAL_TOKEN_DAYS = env_int("PORTAL_TOKEN_DAYS", 90, minimum=1)
PORTAL_TOKEN_MAX_DAYS = env_int("PORTAL_TOKEN_MAX_DAYS", 366, minimum=PORTAL_TOKEN_DAYS)
# No inline scripts anywhere. Inline style *attributes* (bar widths) are allowed, inline style
# elements are not, except htmx's own indicator style, allowed by its hash (htmx 2.0.x).
HTMX_INDICATOR_STYLE_HASH = "'sha256-faU7yAF8NxuMTNEwVmBz+VcYeIoBQ2EMHW3WaVxCvnk='"
# No 'unsafe-eval': the polls use no hx-trigger filters (portal.js pauses them instead) and htmx
# runs with allowEval off. A site with its own templates that need eval sets "'unsafe-eval'".
CSP_SCRIPT_EVAL = env_str("PORTAL_CSP_SCRIPT_EVAL", "")
PORTAL_CSP = env_str("PORTAL_CSP", "; ".join([
    "default-src 'self'", f"script-src 'self' {CSP_SCRIPT_EVAL}".strip(),
    f"style-src 'self' {HTMX_INDICATOR_STYLE_HASH}", "style-src-attr 'unsafe-inline'", "img-src 'self' data:",
    "font-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'self'",
    "form-action 'self'",
]))
# ---- end of security

# The team page refreshes its live area this often (s); each refresh asks Slurm's sshare once.
PORTAL_TEAM_POLL_S = env_int("PORTAL_TEAM_POLL", 15, minimum=1)

# ---- Celery (workers/celery.py reads these with the CELERY_ prefix)
# Job-list API pages stay in Redis until a job they show changes (portal/jobs/list_cache.py);
# this is the longest a page may live even so. 0 turns the cache off.
JOB_LIST_CACHE_SECONDS = env_int("PORTAL_JOB_LIST_CACHE_SECONDS", 30, minimum=0)

CELERY_BROKER_URL = _redis_url("PORTAL_BROKER_URL", 0, env_str("PORTAL_REDIS_URL", ""))
CELERY_RESULT_BACKEND = _redis_url("PORTAL_RESULT_BACKEND", 1)
# A frozen broker must not hold a web request that hands work to Celery: connects and commands
# give up after REDIS_TIMEOUT_S, and a publish is retried once, not three times (the work is in
# the database already; the periodic checks pick it up). The consumer's BRPOP waits 1 s, below
# the socket timeout.
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUT_S
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": max(REDIS_TIMEOUT_S, 2.0),
                                   "socket_connect_timeout": REDIS_TIMEOUT_S}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                    "interval_max": 0.2}
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_TIMEOUT_S
# The result backend subscribes to a task's result when the task is sent, and retried 20
# times: with Redis frozen a hand-off held a web request for 63 s; now at most about 6 s
# (tests/core/test_deploy_services.py). The backend reconnects at the next call.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 0}}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_TIMEOUT_S
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("PORTAL_CELERY_QUEUE", "portal")
CELERY_BEAT_SCHEDULE = {
    # Cheap when nothing changed (one 304 from slurmrestd); keeps the job list fresh within ~2 s.
    "track-jobs": {
        "task": "workers.tasks.jobs.track_jobs_task",
        "schedule": env_float("PORTAL_TRACK_SECONDS", 1.0),
    },
    # ---- health policy: the periodic node check (sync from Slurm, DOWN/NOT_RESPONDING, stale
    # reports, and the policy over every node, so a lost apply_node_policy_task never matters).
    # It replaces the plain 15 s "sync-nodes" entry: a check starts with the same sync.
    "check-nodes": {
        "task": "workers.tasks.nodes.check_nodes_task",
        "schedule": env_float("PORTAL_NODE_CHECK_SECONDS", 10.0),
    },
    # Health report retention (portal/nodes/retention.py): summarise and delete old raw reports.
    "prune-health-reports": {
        "task": "workers.tasks.nodes.prune_health_reports_task",
        "schedule": env_float("PORTAL_HEALTH_PRUNE_SECONDS", 60.0),
    },
    # Hung nodes (portal/nodes/hung.py): probe the slurmd of nodes whose sensors went silent and
    # mark the hung ones DOWN. Cheap when every sensor reports (one indexed query).
    "find-hung-nodes": {
        "task": "workers.tasks.nodes.find_hung_nodes_task",
        "schedule": env_float("PORTAL_HUNG_CHECK_SECONDS", 3.0),
    },
    # ---- end of health policy
    # Goodput and ETTR for /metrics and the reliability page, computed ahead of the readers.
    "refresh-reliability": {
        "task": "workers.tasks.reliability.refresh_reliability_task",
        "schedule": env_float("PORTAL_RELIABILITY_REFRESH_SECONDS", 60.0),
    },
    # ---- recovery (portal/recovery/cycle.py): attempts from the tracker's state changes,
    # failures classified, requeues finished. Two indexed queries when nothing changed.
    "recover-jobs": {
        "task": "workers.tasks.recovery.recover_jobs_task",
        "schedule": env_float("PORTAL_RECOVER_SECONDS", 1.0),
    },
    # ---- end of recovery
    # ---- team quotas (portal/quotas/reconcile.py): the safety net behind the hand-off after a
    # policy change, and what repairs drift made by hand in sacctmgr. Two sacctmgr reads when
    # nothing differs.
    # It also switches used-up budgets in Slurm, so this interval bounds how long a team runs
    # past its budget before the switch: at most this plus one run (well under a second).
    "reconcile-teams": {
        "task": "workers.tasks.teams.reconcile_teams_task",
        "schedule": env_float("PORTAL_TEAM_RECONCILE_SECONDS", 30.0),
    },
    # The reconciler's copy of Slurm's coordinators (portal/quotas/coordinators.py), read whole
    # here so that no reconcile run waits ~10 s for it; runs keep the copy current from
    # slurmdbd's transaction log. A run reads it whole itself only when this stopped for an hour.
    "refresh-coordinators": {
        "task": "workers.tasks.teams.refresh_coordinators_task",
        "schedule": env_float("PORTAL_COORDINATOR_REFRESH_SECONDS", 600.0),
    },
    # GPU-hour rollup (portal/quotas/rollup.py): finished jobs folded into per-day sums. Usage
    # never waits for it (team_usage adds jobs that ended after its cursor live); it keeps the
    # team page's query small. Two indexed queries when nothing changed.
    "fold-usage": {
        "task": "workers.tasks.teams.fold_usage_task",
        "schedule": env_float("PORTAL_USAGE_ROLLUP_SECONDS", 30.0),
    },
    # ---- end of team quotas
}

# ---- team budgets (portal/quotas/reconcile.py): a team over a soft budget runs in this QOS,
# whose Priority is below the normal QOS's, so PriorityWeightQOS puts its jobs behind the
# others'. The reconciler creates it, and raises the normal QOS's Priority to
# NORMAL_QOS_PRIORITY when it is not above the over-budget one's (Slurm's default is 0 for both,
# and a QOS factor of 0 against 0 ranks nothing).
TEAM_BUDGETS = {
    "OVER_BUDGET_QOS": env_str("PORTAL_OVER_BUDGET_QOS", "portal-over-budget"),
    "OVER_BUDGET_QOS_PRIORITY": env_int("PORTAL_OVER_BUDGET_QOS_PRIORITY", 0, minimum=0),
    "NORMAL_QOS": env_str("PORTAL_NORMAL_QOS", "normal"),
    "NORMAL_QOS_PRIORITY": env_int("PORTAL_NORMAL_QOS_PRIORITY", 100, minimum=1),
}

# ---- Slurm gateway (portal/slurm)
SLURM = {
    "REST_URL": env_str("SLURM_REST_URL", "http://127.0.0.1:6820"),
    # slurmrestd's API version: "auto" asks slurmrestd once per process (GET /openapi/v3) and
    # takes the highest it shares with the portal (portal/slurm/rest_versions.py); a version
    # named here skips the question.
    "API_VERSION": env_choice("SLURM_API_VERSION", "auto",
                              {"auto", "v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44"}),
    "JWT_KEY_FILE": env_str("SLURM_JWT_KEY_FILE", str(BASE_DIR / "cluster/state/etc/jwt.key")),
    "TOKEN_LIFESPAN_S": env_int("SLURM_TOKEN_LIFESPAN", 300, minimum=30),
    # The account fleet reads run as: a Slurm Operator, not root.
    "OPERATOR_USER": env_str("SLURM_OPERATOR_USER", "portalop"),
    # Names the gateway must never mint a token for, beyond uid 0 and system uids.
    "SLURM_USER": env_str("SLURM_SLURM_USER", "slurm"),
    "TIMEOUT_S": env_float("SLURM_TIMEOUT", 10.0),
    "CLI_TIMEOUT_S": env_float("SLURM_CLI_TIMEOUT", 30.0),
    "READ_BACKEND": env_choice("SLURM_READ_BACKEND", "cli", {"cli", "pyslurm"}),
    "CLUSTER": env_str("SLURM_CLUSTER", "portal"),
    # Requeue has no REST endpoint in v0.0.38: scontrol runs with the user's JWT under this
    # unprivileged uid, so the token, not the process, decides what Slurm allows.
    "CLI_TOKEN_RUNAS": env_str("SLURM_CLI_TOKEN_RUNAS", "nobody"),
    # A directory holding the cluster's Slurm release when the host packages another one
    # (cluster/roots.py: Debian trixie for 24.11, sid for 26.05): the gateway's scontrol,
    # squeue, sacct and sacctmgr then run in it with chroot, since Slurm's clients must match
    # the daemons' major version. Empty: the host's own commands.
    "CLI_ROOT": env_str("SLURM_CLI_ROOT", ""),
}

# Jobs get CHECKPOINT_DIR=<root>/<team>/<user>/<job uuid> unless they name their own.
CHECKPOINT_ROOT = env_str("PORTAL_CHECKPOINT_ROOT", "/srv/portal/checkpoints")
# The output viewer never reads more than this from a job's output file.
OUTPUT_MAX_BYTES = env_int("PORTAL_OUTPUT_MAX_BYTES", 1024 * 1024, minimum=1024)

# ---- Node health (slurm_plugins sensors report to POST /api/v1/nodes/{name}/health)
# Each node signs its reports with HMAC-SHA256(master key, node name); `manage.py node_key NODE`
# prints a node's key for installing on it. ./cluster/ctl up generates the local cluster's file.
PORTAL_HEALTH_MASTER_KEY_FILE = env_str("PORTAL_HEALTH_MASTER_KEY_FILE",
                                        str(BASE_DIR / "cluster/state/etc/health-master.key"))
# Reports signed further than this from the portal's clock are refused (replays, bad clocks)...
PORTAL_HEALTH_MAX_SKEW_S = env_int("PORTAL_HEALTH_MAX_SKEW", 300, minimum=1)
# ...unless they were spooled while the portal was down (stored as late), up to this old.
PORTAL_HEALTH_MAX_SPOOL_AGE_S = env_int("PORTAL_HEALTH_MAX_SPOOL_AGE", 7 * 24 * 3600, minimum=60)
# ---- end of node health

# ---- health policy (portal/nodes/policy.py: what reports mean; drains, resumes, alerts)
# A drained node (drained by the portal, reason "portal: ...") returns to service after this
# many consecutive clean reports; an admin's drain never does.
PORTAL_HEALTH_CLEAN_CHECKS = env_int("PORTAL_HEALTH_CLEAN_CHECKS", 3, minimum=1)
# Lemon detection looks back this far (seconds)...
PORTAL_HEALTH_LEMON_WINDOW_S = env_int("PORTAL_HEALTH_LEMON_WINDOW", 3600, minimum=60)
# ...and drains a node with this many soft (warning) XIDs in the window: each is "the
# application's fault", but one node collecting them is not...
PORTAL_HEALTH_LEMON_XIDS = env_int("PORTAL_HEALTH_LEMON_XIDS", 3, minimum=1)
# ...or with the same other warning (temperature, NVLink counters, ...) in this many reports...
PORTAL_HEALTH_SOFT_REPEATS = env_int("PORTAL_HEALTH_SOFT_REPEATS", 5, minimum=1)
# ...or with this many jobs FAILED/NODE_FAIL on it, from at least two different users (one
# user's broken script failing everywhere is not a node fault).
PORTAL_HEALTH_LEMON_FAILED_JOBS = env_int("PORTAL_HEALTH_LEMON_FAILED_JOBS", 5, minimum=1)
# At most this share of a partition is drained automatically at a time: floor(share x nodes),
# but at least 1 (8 GPU nodes x 0.10 -> 1). Beyond it the policy alerts admins instead: a
# fault on many nodes at once is rarely many node faults.
PORTAL_HEALTH_DRAIN_CAP = env_float("PORTAL_HEALTH_DRAIN_CAP", 0.10)
if not 0 < PORTAL_HEALTH_DRAIN_CAP <= 1:
    raise ImproperlyConfiguredEnv(f"PORTAL_HEALTH_DRAIN_CAP={PORTAL_HEALTH_DRAIN_CAP}: expected a share in (0, 1]")
# The same alert for the same node is recorded (and logged at ERROR) at most this often (s).
PORTAL_HEALTH_ALERT_REPEAT_S = env_int("PORTAL_HEALTH_ALERT_REPEAT", 600, minimum=0)
# A responding node whose sensor has been silent this long (s) is alerted on: its checks stopped.
PORTAL_HEALTH_STALE_AFTER_S = env_int("PORTAL_HEALTH_STALE_AFTER", 300, minimum=10)
# Hung nodes (portal/nodes/hung.py): a node whose newest health report is PORTAL_HUNG_AFTER_S
# old and whose slurmd has not answered any probe for PORTAL_HUNG_CONFIRM_S is marked DOWN in
# Slurm and its jobs are moved. PORTAL_HUNG_AFTER_S must exceed a few HealthCheckIntervals.
PORTAL_HUNG_AFTER_S = env_int("PORTAL_HUNG_AFTER", 15, minimum=5)
PORTAL_HUNG_CONFIRM_S = env_int("PORTAL_HUNG_CONFIRM", 5, minimum=1)
PORTAL_HUNG_PROBE_TIMEOUT_S = env_float("PORTAL_HUNG_PROBE_TIMEOUT", 1.5)
PORTAL_HUNG_CHECK_SECONDS = env_float("PORTAL_HUNG_CHECK_SECONDS", 3.0)
if PORTAL_HUNG_CONFIRM_S >= PORTAL_HUNG_AFTER_S:
    raise ImproperlyConfiguredEnv(f"PORTAL_HUNG_CONFIRM={PORTAL_HUNG_CONFIRM_S} must be below "
                                  f"PORTAL_HUNG_AFTER={PORTAL_HUNG_AFTER_S}")
# Retention: raw reports (by the time they were received) for this many days, then one summary
# per node and hour for PORTAL_HEALTH_SUMMARY_KEEP_DAYS. A run folds at most BATCH x MAX_BATCHES
# reports, each batch in its own short transaction.
PORTAL_HEALTH_KEEP_DAYS = env_int("PORTAL_HEALTH_KEEP_DAYS", 7, minimum=1)
PORTAL_HEALTH_SUMMARY_KEEP_DAYS = env_int("PORTAL_HEALTH_SUMMARY_KEEP_DAYS", 400, minimum=1)
PORTAL_HEALTH_PRUNE_BATCH = env_int("PORTAL_HEALTH_PRUNE_BATCH", 2000, minimum=1)
PORTAL_HEALTH_PRUNE_MAX_BATCHES = env_int("PORTAL_HEALTH_PRUNE_MAX_BATCHES", 50, minimum=1)
# ...and starts no new batch after this many seconds (the same worker runs the 1 s job tracker).
PORTAL_HEALTH_PRUNE_BUDGET_S = env_float("PORTAL_HEALTH_PRUNE_BUDGET", 2.0)
# /metrics: readable with `Authorization: Bearer <token>` (from the env var or a file), or
# from these addresses/networks (comma-separated; empty: none).
PORTAL_METRICS_TOKEN = env_str("PORTAL_METRICS_TOKEN", "")
PORTAL_METRICS_TOKEN_FILE = env_str("PORTAL_METRICS_TOKEN_FILE", "")
PORTAL_METRICS_ALLOW = env_networks("PORTAL_METRICS_ALLOW", "127.0.0.1,::1")
# A pruned report's nonce is forgotten: a replay of it must already be too old to be accepted.
if PORTAL_HEALTH_KEEP_DAYS * 86400 < PORTAL_HEALTH_MAX_SPOOL_AGE_S:
    raise ImproperlyConfiguredEnv(
        f"PORTAL_HEALTH_KEEP_DAYS={PORTAL_HEALTH_KEEP_DAYS} keeps reports for less than PORTAL_HEALTH_MAX_SPOOL_AGE="
        f"{PORTAL_HEALTH_MAX_SPOOL_AGE_S} s: a replayed spooled report could be stored twice")
# ---- end of health policy

# ---- recovery (portal/recovery: failure classes, automatic requeue, crash-loop protection)
# A job is requeued automatically (after an infrastructure failure) at most this many times in
# a row without progress; the next such failure holds it in Slurm and tells its owner. A run
# made progress when it wrote a newer complete checkpoint than the one it started from, or ran
# PORTAL_CRASH_LOOP_PROGRESS seconds: a long job meets many real faults in its life, and each
# one it survived with new checkpoints starts the count (and the backoff) again.
PORTAL_MAX_AUTO_REQUEUES = env_int("PORTAL_MAX_AUTO_REQUEUES", 3, minimum=0)
PORTAL_CRASH_LOOP_PROGRESS_S = env_int("PORTAL_CRASH_LOOP_PROGRESS", 1800, minimum=1)
# Seconds to wait before the 1st, 2nd, 3rd... automatic restart in a row (the last value
# repeats). The run is taken off the bad node at once; the wait is the job's StartTime in Slurm.
try:
    PORTAL_REQUEUE_BACKOFF_S = [int(v) for v in env_list("PORTAL_REQUEUE_BACKOFF", ["0", "30", "120"])]
except ValueError:
    raise ImproperlyConfiguredEnv("PORTAL_REQUEUE_BACKOFF: expected whole seconds, e.g. 0,30,120") from None
if any(v < 0 for v in PORTAL_REQUEUE_BACKOFF_S):
    raise ImproperlyConfiguredEnv(f"PORTAL_REQUEUE_BACKOFF={PORTAL_REQUEUE_BACKOFF_S}: seconds must be >= 0")
# A job that fails the same way (same cause and XID) on this many different nodes is the job's
# own problem: it is held, not requeued, and its failures do not count against those nodes.
PORTAL_CRASH_LOOP_NODES = env_int("PORTAL_CRASH_LOOP_NODES", 2, minimum=2)
# ...counting only the failures of the last this many seconds: independent faults of one kind
# do hit a big job now and then; a job that breaks every GPU it touches does so within hours.
PORTAL_CRASH_LOOP_WINDOW_S = env_int("PORTAL_CRASH_LOOP_WINDOW", 6 * 3600, minimum=60)
# A fatal finding a node reports up to this many seconds after a job on it failed still
# explains the failure (the sensor runs every few seconds; the job may die first).
PORTAL_RECOVERY_FINDING_GRACE_S = env_int("PORTAL_RECOVERY_FINDING_GRACE", 30, minimum=0)
# ---- end of recovery

# ---- liveness (portal/infra/liveness.py: /healthz and /metrics)
# /healthz is 503 when the newest heartbeat of a part is older than this (seconds). The worker
# and beat beat every few seconds, the tracker each cycle (1 s), the node check every 10 s.
PORTAL_LIVENESS_STALE_S = {
    "worker": env_float("PORTAL_LIVENESS_WORKER_STALE", 30.0),
    "beat": env_float("PORTAL_LIVENESS_BEAT_STALE", 30.0),
    "tracker": env_float("PORTAL_LIVENESS_TRACKER_STALE", 30.0),
    "node_check": env_float("PORTAL_LIVENESS_NODE_CHECK_STALE", 60.0),
}
# ---- end of liveness

# ---- Logs: to stderr, and with PORTAL_LOG_DIR set (scripts/portal.sh sets var/log) also to
# <dir>/<PORTAL_LOG_NAME>.log, one file per process kind (web, worker, beat), rotated by size.
# A daemonised gunicorn sends stderr to /dev/null, so without the file Django's tracebacks of
# 500s were lost.
LOG_DIR = env_str("PORTAL_LOG_DIR", "")
_log_handlers: dict = {"console": {"class": "logging.StreamHandler", "formatter": "plain"}}
if LOG_DIR:
    _log_handlers["file"] = file_handler(LOG_DIR, env_str("PORTAL_LOG_NAME", "portal"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": _log_handlers,
    "root": {"handlers": list(_log_handlers), "level": env_str("PORTAL_LOG_LEVEL", "INFO")},
}
# Celery would replace the root logger's handlers with its own (--logfile, never rotated).
CELERY_WORKER_HIJACK_ROOT_LOGGER = not LOG_DIR

# ---- notifications (portal/recovery/notify.py): emails to job owners on requeue, crash-loop
# hold and failure. The demo prints them on the worker's console; sites set
# PORTAL_EMAIL_BACKEND=smtp and the PORTAL_SMTP_* values. The password comes from
# PORTAL_SMTP_PASSWORD or the file named by PORTAL_SMTP_PASSWORD_FILE, never the repository.
_EMAIL_BACKENDS = {"console": "django.core.mail.backends.console.EmailBackend",
                   "smtp": "django.core.mail.backends.smtp.EmailBackend",
                   "locmem": "django.core.mail.backends.locmem.EmailBackend",
                   "none": "django.core.mail.backends.dummy.EmailBackend"}
EMAIL_BACKEND = _EMAIL_BACKENDS[env_choice("PORTAL_EMAIL_BACKEND", "console", set(_EMAIL_BACKENDS))]
EMAIL_HOST = env_str("PORTAL_SMTP_HOST", "localhost")
EMAIL_PORT = env_int("PORTAL_SMTP_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("PORTAL_SMTP_USER", "")
EMAIL_HOST_PASSWORD = env_optional_secret("PORTAL_SMTP_PASSWORD", default_file=VAR_DIR / "smtp_password")
# starttls (port 587), ssl (implicit TLS, port 465) or none (a relay on localhost only).
_SMTP_TLS = env_choice("PORTAL_SMTP_TLS", "starttls", {"starttls", "ssl", "none"})
EMAIL_USE_TLS = _SMTP_TLS == "starttls"
EMAIL_USE_SSL = _SMTP_TLS == "ssl"
# A stalled mail server must not hold a worker: each SMTP step gives up after this many seconds,
# and the task retries with backoff (PORTAL_NOTIFY_RETRIES times).
EMAIL_TIMEOUT = env_int("PORTAL_SMTP_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("PORTAL_EMAIL_FROM", "Cluster portal <portal@localhost>")
PORTAL_NOTIFY_RETRIES = env_int("PORTAL_NOTIFY_RETRIES", 5, minimum=0)
# Absolute links in emails (the job page, the settings page): the address people open the portal at.
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# ---- end of notifications

# ---- reliability (portal/recovery/reliability.py): goodput and ETTR over this many days, and
# how long /metrics keeps the computed figures (a scrape every few seconds must not recompute).
PORTAL_RELIABILITY_WINDOW_DAYS = env_int("PORTAL_RELIABILITY_WINDOW_DAYS", 7, minimum=1)
# The beat task refresh-reliability recomputes them every PORTAL_RELIABILITY_REFRESH_SECONDS, so
# with 1M jobs (about 2 s of SQL) neither a scrape nor the page waits for the computation.
PORTAL_RELIABILITY_CACHE_S = env_int("PORTAL_RELIABILITY_CACHE_SECONDS", 180, minimum=0)
# ---- end of reliability
