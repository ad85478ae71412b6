"""Where a reading came from: the provenance the warehouse keeps with every value (``readings.source``).

``agent``: measured and signed at the station by quantrac's edge agent (the station's own key).
``tt10``: converted from a TT10 TXT file by the TT10 ingest bridge and signed with the bridge's key
(``readings.file_sha256`` names the file). A batch without a source marker is an agent's.
"""

from __future__ import annotations

AGENT = "agent"
TT10 = "tt10"

SOURCES: tuple[str, ...] = (AGENT, TT10)
#: The sources that are conversions of a file: their batches name the file's SHA-256.
FILE_SOURCES = frozenset({TT10})
