"""Configuration errors always name the offending field path, as Envoy's do."""


class ConfigError(ValueError):
    """Bad or unsupported configuration. `path` is a dotted/indexed field path, e.g.
    ``static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
