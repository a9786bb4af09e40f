"""The doc model: what the library's docs are, read one way everywhere.

The bottom of the layers (only protocol below): storage, schema, policies and the app all
name doc types through this module.
"""

from __future__ import annotations

# The `type` of each kind of doc in `dmedia-1` (log docs in `log-1` have their own types,
# listed in schema.LOG_TYPES).
TYPE_FILE = "dmedia/file"
TYPE_STORE = "dmedia/store"
TYPE_MACHINE = "dmedia/machine"
