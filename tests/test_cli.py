"""The command line as a user meets it."""

import pytest

from decorbench.cli import main


def test_demo_trains_bp_and_dbp_on_digits_and_reports_both(capsys):
    assert main(["demo", "--epochs", "3"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"bp", "dbp"}
    assert all(0.8 < float(row[1]) <= 1.0 for row in rows.values())  # test accuracy after 3 epochs
    before, after = float(rows["dbp"][4]), float(rows["dbp"][8])
    assert after < before  # DBP lowered the correlation of its layers' inputs


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["demo", "--epochs", "x"], ["nope"], []])
def test_bad_arguments_exit_2_with_a_one_line_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]
