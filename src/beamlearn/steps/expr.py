"""(being written) expr steps."""

__all__: list[str] = []
