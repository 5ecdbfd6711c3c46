import pytest

from envs.markdown import markdown_table


def test_a_table_has_a_header_a_rule_and_one_line_per_row():
    assert markdown_table(["a", "b"], [["1", 2.5], ["x", None]]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2.5 |",
        "| x | None |",
    ]


def test_a_row_with_a_missing_cell_is_refused():
    with pytest.raises(ValueError, match=r"row \['1'\] has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [["1"]])
