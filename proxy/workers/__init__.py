"""``--concurrency N``: a main process (xDS, SDS, admin) and N worker processes sharing each listener
through SO_REUSEPORT. See docs/performance.md ("Multi-worker proxy")."""
