"""Block until every target exists (a path or glob) or answers 200 (an http:// URL); the init containers' step.

Usage: ``python /opt/instructrec/wait_for.py /data/movielens-100k/items.jsonl http://triton:8000/v2/health/ready``

Standard library only, so that it runs in the services, tools and Triton images alike. It waits without a
limit: a pod stuck in ``Init`` names what it is waiting for in its log (``kubectl logs POD -c wait``).
"""

from __future__ import annotations

import glob
import os
import sys
import time
import urllib.error
import urllib.request


def is_ready(target: str) -> bool:
    """Whether a path exists, or an HTTP URL answers 200 within two seconds."""
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False
    # A glob such as /models/ranker/*/metadata.json: any exported version will do (old ones get pruned).
    return bool(glob.glob(target)) if glob.has_magic(target) else os.path.exists(target)


def wait_for(targets: list[str], interval_s: float = 5.0, log_every_s: float = 30.0) -> None:
    """Return once every target is ready, logging the missing ones every ``log_every_s``."""
    last_log = float("-inf")
    while missing := [t for t in targets if not is_ready(t)]:
        if time.monotonic() - last_log >= log_every_s:
            print("waiting for: " + ", ".join(missing), flush=True)
            last_log = time.monotonic()
        time.sleep(interval_s)
    print("ready: " + ", ".join(targets), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    wait_for(sys.argv[1:])
