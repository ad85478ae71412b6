"""Where TT10 files come from: FTP/FTPS and SFTP servers, a folder watcher, a remote pull.
Each hands the exact bytes of every file to an ``UploadSink``. See README.md."""

from broker_bridge.tt10.sources.upload import SerializedSink, Upload, UploadSink

__all__ = ["SerializedSink", "Upload", "UploadSink"]
