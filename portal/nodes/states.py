"""Node states in plain words: the one label function every page uses for a node.

Slurm's state ("MIXED") and flags ("DRAIN", "NOT_RESPONDING") become one word ("partly
used", "draining") and a badge colour. The node list, the node page and the home page all
call `state_word`, so one node never reads "partly used" on one page and "mixed" on another.
"""

from __future__ import annotations

STATE_ORDER = ["idle", "partly used", "in use", "draining", "drained", "down", "not responding"]
OUT_OF_SERVICE = {"draining", "drained", "down", "not responding"}
WORD_BADGE = {"idle": "ok", "partly used": "info", "in use": "info", "draining": "warn", "drained": "bad",
              "down": "bad", "not responding": "bad"}
USAGE_WORDS = {"IDLE": "idle", "MIXED": "partly used", "ALLOCATED": "in use", "COMPLETING": "in use"}
BUSY = {"ALLOCATED", "MIXED", "COMPLETING"}


def state_word(state: str, flags: list[str] | tuple[str, ...]) -> tuple[str, str]:
    """Slurm's state and flags as (plain words, badge colour). Faults win over usage."""
    word = _word(state, set(flags))
    return word, WORD_BADGE.get(word, "neutral")


def _word(state: str, flags: set[str]) -> str:
    if state in {"DOWN", "FAIL"} or "FAIL" in flags:
        return "down"
    if "NOT_RESPONDING" in flags:
        return "not responding"
    if "DRAIN" in flags or state == "DRAINED":
        # Jobs still running on it: it is on its way out rather than out.
        return "draining" if state in BUSY or "COMPLETING" in flags else "drained"
    if "COMPLETING" in flags:
        return "in use"
    return USAGE_WORDS.get(state) or state.lower().replace("_", " ") or "unknown"
