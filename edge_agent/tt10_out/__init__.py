"""TT10 out: the agent also delivers the regulation's TXT files to province servers. See README.md."""

from edge_agent.tt10_out.clients import PasswordFileError, UploadError, deliver, read_password, temporary_name
from edge_agent.tt10_out.queue import QueuedFile, Tt10Queue
from edge_agent.tt10_out.service import Tt10Out, Tt10OutError, queue_path_for, remote_dir

__all__ = [
    "PasswordFileError",
    "QueuedFile",
    "Tt10Out",
    "Tt10OutError",
    "Tt10Queue",
    "UploadError",
    "deliver",
    "queue_path_for",
    "read_password",
    "remote_dir",
    "temporary_name",
]
