"""`make protos` output is checked in; this fails when someone edits a .proto and forgets to regenerate."""

import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO


def test_generated_code_matches_protos(tmp_path: Path):
    subprocess.run(
        ["bash", str(REPO / "scripts/gen-protos.sh"), str(tmp_path)],
        check=True,
        cwd=REPO,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py"))
    assert generated, "protoc generated nothing"
    stale = [str(rel) for rel in generated if (REPO / rel).read_text() != (tmp_path / rel).read_text()]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


def test_ca_service_is_wire_compatible_with_istio():
    from api.istio.v1.auth import ca_pb2

    service = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"]
    assert service.full_name == "istio.v1.auth.IstioCertificateService"
    method = service.methods_by_name["CreateCertificate"]
    assert method.input_type.full_name == "istio.v1.auth.IstioCertificateRequest"
    fields = {f.name: f.number for f in method.input_type.fields}
    assert fields == {"csr": 1, "validity_duration": 3, "metadata": 4}
    assert {f.name: f.number for f in method.output_type.fields} == {"cert_chain": 1}
