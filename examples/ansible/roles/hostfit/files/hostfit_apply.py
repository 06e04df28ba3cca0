"""Run `hostfit apply` and print {"changed": ...}: whether models.json or models.lock changed.

Usage: <hostfit venv>/bin/python hostfit_apply.py CATALOG_DIR [HOST]
hostfit's own exit status (and its messages, on stderr) is passed through."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from compiler.errors import UsageError
from compiler.executor.fetch import host_folder
from compiler.runtime import installed_path


def digest(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None


def main(catalog: str, host: str = "") -> int:
    catalog_dir = Path(catalog).expanduser()
    try:  # the folder apply will use, by hostfit's own rule; when there is none, apply says why
        lock = host_folder(catalog_dir / "out", host or None) / "models.lock"
    except UsageError:
        lock = None
    watched = [installed_path(), lock]
    before = [digest(path) for path in watched]
    command = [str(Path(sys.executable).with_name("hostfit")), "-C", str(catalog_dir), "apply"]
    result = subprocess.run(command + (["--host", host] if host else []), stdout=subprocess.PIPE, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout)
        return result.returncode
    print(json.dumps({"changed": before != [digest(path) for path in watched], "output": result.stdout.strip(),
                      "models_json": str(watched[0]), "models_lock": str(lock)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
