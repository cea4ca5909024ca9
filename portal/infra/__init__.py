"""Plumbing every app may use (errors, Redis, hand-off to Celery, liveness); imports no portal app."""
