"""`isthmus token create` prints a token citadel accepts for exactly the named identity."""

import pytest

from citadel import storage
from citadel.ca import tokens
from isthmus.cli import main


def test_prints_a_verifiable_token(tmp_path, capsys):
    key = storage.load_or_create_token_key(tmp_path)
    assert main(["token", "create", "--namespace", "default", "--service-account", "bookinfo",
                 "--ttl", "10m", "--root-dir", str(tmp_path)]) == 0  # fmt: skip
    claims = tokens.verify(key, capsys.readouterr().out.strip())
    assert (claims.namespace, claims.service_account) == ("default", "bookinfo")


def test_missing_root_dir_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["token", "create", "-n", "default", "--service-account", "x", "--root-dir", str(tmp_path)]) == 1
    )
    assert "start citadel with --root-dir" in capsys.readouterr().err


def test_bad_names_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["token", "create", "-n", "Bad_NS", "--service-account", "x", "--root-dir", str(tmp_path)])
    assert e.value.code == 2 and "namespace" in capsys.readouterr().err
