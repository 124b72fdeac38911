"""raise_open_files_limit: the soft RLIMIT_NOFILE up to the hard one at `velollm serve` start.

Each client connection holds a descriptor. Python keeps the soft limit it inherits, 1024 on most Linux
desktops and under systemd, so about a thousand concurrent clients make accept() fail with EMFILE. Go
raises the soft limit to the hard one by itself (Ollama gets it for free); vLLM's API server calls its
set_ulimit() for the same reason. Here: soft = min(hard, TARGET), logged when it changes, a warning when
the hard limit itself is low, never an error where setrlimit is refused (a sandbox, another OS).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

TARGET = 65535  # vLLM's set_ulimit() target
LOW_HARD_LIMIT = 4096  # below this a busy server runs out of descriptors however the soft limit is set


def raise_open_files_limit(target: int = TARGET) -> tuple[int, int] | None:
    """(soft before, soft after), or None where the platform has no RLIMIT_NOFILE (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if hard != resource.RLIM_INFINITY and hard < LOW_HARD_LIMIT:
        logger.warning("the hard limit on open files is %d: at most about that many concurrent connections "
                       "(raise it with `ulimit -Hn` or systemd's LimitNOFILE=)", hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit from %d to %d (%s): about %d concurrent "
                           "connections at most; raise it with `ulimit -n`", soft, wanted, exc, soft)
            return soft, soft
        logger.info("open-files limit raised from %d to %d (hard limit %s)", soft, wanted,
                    "unlimited" if hard == resource.RLIM_INFINITY else hard)
        return soft, wanted
    return soft, soft
