"""citadel's CA core: keys, certificates, CSR checks, tokens. No gRPC, no sockets."""
