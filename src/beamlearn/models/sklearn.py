"""(being written) sklearn models."""

__all__: list[str] = []
