"""`isthmus up` starts every run from the base config: pilot's config dir is written afresh and the
store of config applied with `isthmus apply` in an earlier run is emptied."""

from pathlib import Path

from isthmus.launcher import local
from isthmus.launcher.topology import MeshOptions


def test_a_new_run_forgets_config_applied_in_the_previous_one(tmp_path: Path) -> None:
    options = MeshOptions(state_dir=str(tmp_path / "state"))
    stored = Path(options.config_store) / "VirtualService" / "default" / "reviews.json"
    stored.parent.mkdir(parents=True)
    stored.write_text("{}")
    local.prepare(options)
    assert not Path(options.config_store).exists()
    written = sorted(p.name for p in Path(options.config_dir).iterdir())
    assert "bookinfo-services.yaml" in written and "bookinfo-gateway.yaml" in written
