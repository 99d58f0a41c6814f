# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Plain-text result tables of the retrieval benchmarks."""
from typing import Sequence


def format_table(title: str, header: Sequence[str],
                 rows: Sequence[Sequence[object]]) -> str:
    """Render a plain-text table.

    Args:
        title (str): Line printed above the table.
        header (Sequence[str]): Column names.
        rows (Sequence[Sequence]): Cells; floats are shown with 2 decimals.
            Numeric columns are right-aligned, others left-aligned.

    Returns:
        str: The table.
    """

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f'{value:.2f}'
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows)
        for i in range(len(header))
    ]
    widths = [
        max([len(str(h))] + [len(r[i]) for r in cells])
        for i, h in enumerate(header)
    ]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(values: Sequence[object]) -> str:
        padded = [
            str(v).rjust(w) if num else str(v).ljust(w)
            for v, w, num in zip(values, widths, numeric)
        ]
        return '| ' + ' | '.join(padded) + ' |'

    body = [line(r) for r in cells]
    return '\n'.join([title, rule, line(header), rule, *body, rule])
