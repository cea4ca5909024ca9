"""gunicorn's settings for the demo (scripts/portal.sh starts it with --config this file).

Its own error log (worker boots, crashes, timeouts) goes to <PORTAL_LOG_DIR>/web.log, the file
Django's loggers write in the same processes, and its access log to web-access.log; both are
rotated by size (portal/logfiles.py). A daemonised gunicorn would send anything else to
/dev/null.
"""

import os
import sys

# The config file is read before gunicorn puts the project on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from portal.logfiles import FORMAT, file_handler

_log_dir = os.environ.get("PORTAL_LOG_DIR", "var/log")

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": FORMAT}, "access": {"format": "%(message)s"}},
    "handlers": {"error": file_handler(_log_dir, "web"),
                 "access": file_handler(_log_dir, "web-access", formatter="access")},
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}
