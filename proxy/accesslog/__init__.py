"""Access logs: Envoy's command operators (``formatter``) and the file/stdout loggers, filters and
``build_access_loggers(access_log_protos, ctx, path)`` (``loggers``) that HCM and tcp_proxy call."""
