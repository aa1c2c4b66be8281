"""gRPC clients of the proxy's side services (ext_authz, rate limit, access log service)."""
