"""The shipped settings plus one URL that raises, for tests/core/test_deploy_web.py."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "tests.core.deploy_urls"
