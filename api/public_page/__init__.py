"""The public AQI page (HTML, JS, CSS) and the charting bundle it uses, served by the API's process."""

from api.public_page.page import PAGE_PREFIX, BundleMissing, install

__all__ = ["PAGE_PREFIX", "BundleMissing", "install"]
