import pytest

from isthmus.cli import build_parser, main


def test_unknown_flag_exits_2_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["up", "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: isthmus up" in err and "--no-such-flag" in err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: isthmus" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["up", "--address-base", "10.0.0.1"], "must be in 127.0.0.0/8"),
        (["up", "--port", "0"], "--port must be between 1 and 65535"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_up_defaults():
    args = build_parser().parse_args(["up"])
    assert (args.address_base, args.port, args.color) == ("127.0.0.10", 9080, "auto")
