"""The TT10 ingest bridge's sink: archive, ledger, judgement, conversion, publishing. See README.md."""
