"""Beam wiring and the command line: composite PTransforms over `curation` functions."""
import logging


class _NoGcpImportNotice(logging.Filter):
    # Beam's GCP modules log "apitools not found" on the root logger when first imported, by whichever
    # command imports Beam first; a local run has no use for GCP, and the line would break the CLI's
    # one-paragraph messages.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_NoGcpImportNotice())
