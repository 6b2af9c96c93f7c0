"""(being written) impute steps."""

__all__: list[str] = []
