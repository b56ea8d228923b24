"""The local shell: ``qmlops run`` reconciles a Git repository on this machine with the engine."""
