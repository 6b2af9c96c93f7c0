"""(being written) discretize steps."""

__all__: list[str] = []
