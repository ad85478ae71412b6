"""The instrument status codes of TT 10/2021 (Phụ lục 15).

Only these three exist in the regulation; ``03`` ("maintenance") seen in some
loggers is internal to them and must be refused, never read as ``00``.
"""

from __future__ import annotations

from typing import Literal

StatusCode = Literal["00", "01", "02"]

MEASURING = "00"  # Đang đo
CALIBRATING = "01"  # Hiệu chuẩn
DEVICE_ERROR = "02"  # Báo lỗi thiết bị

STATUS_CODES: tuple[str, ...] = (MEASURING, CALIBRATING, DEVICE_ERROR)

#: For people: (Vietnamese, English).
STATUS_MEANING: dict[str, tuple[str, str]] = {
    MEASURING: ("Đang đo", "measuring"),
    CALIBRATING: ("Hiệu chuẩn", "calibrating"),
    DEVICE_ERROR: ("Báo lỗi thiết bị", "device error"),
}
