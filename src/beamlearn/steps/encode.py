"""(being written) encode steps."""

__all__: list[str] = []
