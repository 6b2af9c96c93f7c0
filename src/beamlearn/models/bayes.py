"""(being written) bayes models."""

__all__: list[str] = []
