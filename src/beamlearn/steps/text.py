"""(being written) text steps."""

__all__: list[str] = []
