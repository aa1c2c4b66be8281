"""The local launcher: `topology` describes what runs where (pure); `supervisor` runs it (I/O)."""
