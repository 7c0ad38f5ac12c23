"""Every ``sarssl`` command (and every figure of ``sarssl plot``) prints its help: argparse
%-formats help strings, so a stray ``%`` in one breaks ``--help`` at run time only."""

from __future__ import annotations

import pytest

from sarssl.cli import COMMANDS, main
from sarssl.figures.registry import FIGURES


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_figure_prints_its_help(capsys):
    import sarssl.figures.cli  # noqa: F401  (registers the figures)

    assert FIGURES
    for name in FIGURES:
        with pytest.raises(SystemExit) as exc:
            main(["plot", name, "--help"])
        assert exc.value.code == 0, name
    assert "usage:" in capsys.readouterr().out
