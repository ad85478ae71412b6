"""The two ways the warehouse says no, shared by its writers (ilp_writer.py) and its readers (queries.py)."""


class WarehouseUnavailable(RuntimeError):
    """QuestDB could not take the rows (or answer the query) now; retry the same later."""


class WarehouseRefused(RuntimeError):
    """QuestDB refused the rows themselves (schema, names); retrying will not help."""
