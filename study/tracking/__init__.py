"""The tracking layer: MLflow. `writer` is the only code that writes to a tracking store; `outbox`
keeps its writes while the server is away; `server` runs `segstudy tracking serve`; `stores` checks
what a URI names (scheme, database driver, reachability) and prints it without secrets.
"""

from __future__ import annotations

from study.tracking.writer import StudyTracker, reading_client, resolve_tracking_uri

__all__ = ["StudyTracker", "reading_client", "resolve_tracking_uri"]
