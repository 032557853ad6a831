"""Where the hospital's audit log lives: shared by its writer (``client.audit``) and its reader
(``client.audit_summary``, run from ``python -m client.audit summary``), so the reader need not
import the writer."""

AUDIT_FILE = "audit.jsonl"  # inside the node's state-dir
