"""Audit the installed dependencies for known vulnerabilities with pip-audit (run by .ci/run).

Fails (exit 1) when any installed package has a known vulnerability. pip-audit asks PyPI's per-release JSON API;
where that API does not answer (a registry mirror, no internet), packages come back unaudited: the script then
says how many were audited and passes, since it cannot tell a vulnerable package from an unreachable service.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        run = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--format", "json",
             "--output", str(out)],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if not out.exists():
            print(f"pip-audit: could not run (exit {run.returncode}): {run.stderr.strip()[-500:]}")
            return 0
        deps = json.loads(out.read_text())["dependencies"]
    vulnerable = [d for d in deps if d.get("vulns")]
    audited = [d for d in deps if "skip_reason" not in d]
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"pip-audit: {dep['name']} {dep.get('version', '')} has known vulnerabilities: {ids}")
    print(f"pip-audit: {len(audited)} of {len(deps)} packages audited, {len(vulnerable)} with known vulnerabilities"
          + ("" if len(audited) == len(deps) else " (the others could not be looked up on PyPI from here)"))  # fmt: skip
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
