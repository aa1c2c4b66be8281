"""pilot's mesh-config flags: --mesh-config FILE and --mixer-address build the MeshConfig the
builders see; a bad file stops pilot with its path."""

from __future__ import annotations

import pytest

from pilot.__main__ import main
from pilot.model.mesh import MIXER_HOST
from pilot.server.app import Settings, mesh_from_settings


def test_mixer_address_makes_mixer_the_default_providers():
    mesh = mesh_from_settings(Settings(mixer_address=("127.0.0.4", 9091)))
    assert [p.name for p in mesh.access_log_providers()] == ["mixer-telemetry", "mixer-tcp-telemetry"]
    assert mesh.provider("mixer").kind == "envoyExtAuthzGrpc"
    assert mesh.address_of(MIXER_HOST) == "127.0.0.4"


def test_mesh_config_file_providers_win_over_the_flag(tmp_path):
    f = tmp_path / "mesh.yaml"
    f.write_text(
        "rootNamespace: mesh-root\nextensionProviders:\n- name: mixer\n"
        f"  envoyExtAuthzGrpc: {{service: {MIXER_HOST}, port: 9091, failOpen: true}}\n"
    )
    mesh = mesh_from_settings(Settings(mesh_config=str(f), mixer_address=("127.0.0.4", 9091)))
    assert mesh.provider("mixer").fail_open is True
    assert mesh.root_namespace == "mesh-root"
    assert mesh.provider("mixer-telemetry") is not None


def test_bad_mesh_config_stops_pilot_with_the_path(tmp_path, capsys):
    f = tmp_path / "mesh.yaml"
    f.write_text("defaultProviders: {accessLogging: [nope]}\n")
    with pytest.raises(SystemExit) as e:
        main(["--mesh-config", str(f)])
    assert e.value.code == 2
    assert "defaultProviders.accessLogging[0]: no extension provider named 'nope'" in capsys.readouterr().err
