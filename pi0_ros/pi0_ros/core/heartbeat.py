"""How the policy knows a command streamer is there: streamer_status is the streamer's heartbeat.

Shared by both sides (no ROS imports): the policy counts the streamer as gone
after STREAMER_TIMEOUT_S without a streamer_status, so the streamer publishes
it at least MIN_STREAMER_STATUS_RATE_HZ.
"""

from __future__ import annotations

STREAMER_TIMEOUT_S = 1.0  # silence on streamer_status this long (node clock) means no streamer
MIN_STREAMER_STATUS_RATE_HZ = 2.0 / STREAMER_TIMEOUT_S  # two statuses per window: one may be late
