# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from ehm_mm.retrieval.metrics.table import format_table


def test_format_table_aligns_and_rounds():
    table = format_table('Title', ['Setup', 'Queries', 'mAP'],
                         [['Easy', 6, 100.0], ['Medium', 70, 3.14159]])
    assert table.splitlines() == [
        'Title',
        '+--------+---------+--------+',
        '| Setup  | Queries |    mAP |',
        '+--------+---------+--------+',
        '| Easy   |       6 | 100.00 |',
        '| Medium |      70 |   3.14 |',
        '+--------+---------+--------+',
    ]
