"""Vietnam's local time, used only at the edges the regulation defines
(TT10 file stamps, the VN_AQI day, what people read); inside, every time is UTC.

Asia/Ho_Chi_Minh has kept +07:00 without daylight saving since 1975, so a fixed
offset and the zone database agree for every time a station can report, and a
fixed offset needs no tz database on the machine.
"""

from __future__ import annotations

from datetime import timedelta, timezone

VIETNAM_OFFSET_S = 7 * 3600
VIETNAM = timezone(timedelta(seconds=VIETNAM_OFFSET_S), "ICT")
