"""(being written) cluster models."""

__all__: list[str] = []
