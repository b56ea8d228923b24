"""Git is the registry: versions, the ledger of decisions, approvals, and the commits that carry them.

See docs/registry.md for the layout and docs/approvals.md for how an approver approves a version.
"""

from controller.engine.registry.git import DEFAULT_IDENTITY, Commit, Git, GitError, GitIdentity, PublishResult
from controller.engine.registry.ledger import Entry, Ledger
from controller.engine.registry.store import REGISTRY_DIR, Recorded, Registry, RegistryError
from controller.engine.registry.versions import Provenance, Version

__all__ = [
    "DEFAULT_IDENTITY",
    "REGISTRY_DIR",
    "Commit",
    "Entry",
    "Git",
    "GitError",
    "GitIdentity",
    "Ledger",
    "Provenance",
    "PublishResult",
    "Recorded",
    "Registry",
    "RegistryError",
    "Version",
]
