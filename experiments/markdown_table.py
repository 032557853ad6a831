"""Markdown tables of the benchmark reports."""

from __future__ import annotations


def table_head(*columns: str) -> list[str]:
    """The header and separator lines of a table of ``columns``: the count cannot drift from the names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
