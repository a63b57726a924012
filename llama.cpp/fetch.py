#!/usr/bin/env python3
"""Acquire the pinned llama.cpp source, apply pyspec's patches, print its path.

Called by CMakeLists.txt at configure time; also usable by hand:

    python llama.cpp/fetch.py            # -> prints the patched source dir

The pin (pin.json) is llama.cpp as shipped in vendor/llama.cpp of a PyPI sdist.
The sdist is downloaded with pip (the only registry we may reach), its sha256
is checked, and the tree is extracted into llama.cpp/_cache/src (gitignored).
Patches from patches/*.patch are applied in name order. Later runs only touch
files whose content changed, so a patch edit rebuilds just what it touches.

Environment:
    LLAMA_CPP_SOURCE_DIR  use this llama.cpp checkout instead of the download
    PYSPEC_LLAMA_SDIST    path to an already downloaded sdist tarball
    PYSPEC_LLAMA_CACHE    cache folder (default: llama.cpp/_cache)
"""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIN = json.loads((HERE / "pin.json").read_text())
PATCHES = sorted((HERE / "patches").glob("*.patch"))


class FetchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[pyspec llama.cpp] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_sdist(downloads: Path) -> Path:
    explicit = os.environ.get("PYSPEC_LLAMA_SDIST")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FetchError(f"PYSPEC_LLAMA_SDIST={explicit} is not a file")
    else:
        path = downloads / PIN["sdist_file"]
        if not path.is_file():
            downloads.mkdir(parents=True, exist_ok=True)
            spec = f"{PIN['sdist_package']}=={PIN['sdist_version']}"
            log(f"downloading {spec} (sdist) with pip")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
                   "--no-binary", ":all:", "--no-build-isolation", "-d", str(downloads), spec]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not path.is_file():
                # --no-build-isolation needs the sdist's build backend installed;
                # retry with isolation before giving up.
                cmd.remove("--no-build-isolation")
                res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not path.is_file():
                raise FetchError(
                    f"could not download {spec} from PyPI (pip exit {res.returncode}):\n"
                    f"{res.stderr.strip()[-2000:]}\n"
                    "Set LLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp to build against a local "
                    f"checkout of llama.cpp {PIN['commit']}, or PYSPEC_LLAMA_SDIST=/path/to/"
                    f"{PIN['sdist_file']} to use a downloaded sdist.")
    got = sha256_file(path)
    if got != PIN["sdist_sha256"]:
        raise FetchError(
            f"{path}: sha256 {got} does not match the pin {PIN['sdist_sha256']}.\n"
            "Delete the file and retry, or set LLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp.")
    return path


def extract(sdist: Path, dest: Path) -> None:
    prefix = f"{sdist.name[:-len('.tar.gz')]}/{PIN['sdist_subdir']}/"
    with tarfile.open(sdist) as tf:
        members = []
        for m in tf.getmembers():
            if not m.name.startswith(prefix) or m.name == prefix.rstrip("/"):
                continue
            m.name = m.name[len(prefix):]
            if m.isfile() or m.isdir() or m.issym():
                members.append(m)
        tf.extractall(dest, members=members, filter="data" if hasattr(tarfile, "data_filter") else None)


def apply_patches(tree: Path) -> None:
    for p in PATCHES:
        args = ["patch", "-p1", "--forward", "--silent", "-d", str(tree), "-i", str(p)]
        res = subprocess.run(args + ["--dry-run"], capture_output=True, text=True)
        if res.returncode != 0:
            rev = subprocess.run(["patch", "-p1", "-R", "--dry-run", "--silent", "-d", str(tree),
                                  "-i", str(p)], capture_output=True, text=True)
            if rev.returncode == 0:
                log(f"{p.name}: already applied")
                continue
            raise FetchError(f"patch {p.name} does not apply:\n{res.stdout}{res.stderr}")
        subprocess.run(args, check=True, capture_output=True)
        log(f"applied {p.name}")


def sync(src: Path, dst: Path) -> int:
    """Make dst equal to src, touching only files whose content differs."""
    changed = 0
    dst.mkdir(parents=True, exist_ok=True)
    cmp = filecmp.dircmp(src, dst)
    for name in cmp.right_only:
        p = dst / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        changed += 1
    for name in cmp.left_only + cmp.common_funny:
        s, d = src / name, dst / name
        if d.exists() or d.is_symlink():
            shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
        if s.is_dir() and not s.is_symlink():
            shutil.copytree(s, d, symlinks=True)
        else:
            shutil.copy2(s, d, follow_symlinks=False)
        changed += 1
    for name in cmp.common_files:
        s, d = src / name, dst / name
        if not filecmp.cmp(s, d, shallow=False):
            shutil.copy2(s, d)
            changed += 1
    for name in cmp.common_dirs:
        changed += sync(src / name, dst / name)
    return changed


def stamp_of(origin: str) -> str:
    h = hashlib.sha256(origin.encode())
    for p in PATCHES:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> int:
    cache = Path(os.environ.get("PYSPEC_LLAMA_CACHE") or HERE / "_cache").resolve()
    out = cache / "src"
    local = os.environ.get("LLAMA_CPP_SOURCE_DIR")
    if local:
        local_path = Path(local).resolve()
        if not (local_path / "include" / "llama.h").is_file():
            raise FetchError(f"LLAMA_CPP_SOURCE_DIR={local}: expected a llama.cpp checkout "
                             "(include/llama.h not found)")
        origin = f"local:{local_path}"
    else:
        origin = f"sdist:{PIN['sdist_sha256']}"
    stamp_file = cache / "stamp"
    stamp = stamp_of(origin)
    # A local checkout can change under us at any time, so always re-sync it.
    if not local and out.is_dir() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        print(out)
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="staging-") as tmp:
        staging = Path(tmp) / "llama.cpp"
        if local:
            log(f"using local checkout {local_path}")
            def skip(folder, names):  # VCS data and top-level build folders, nothing else
                top = Path(folder) == local_path
                return [n for n in names if n == ".git" or (top and n.startswith("build"))]
            shutil.copytree(local_path, staging, symlinks=True, ignore=skip)
        else:
            sdist = download_sdist(cache / "downloads")
            log(f"extracting {sdist.name} (sha256 ok)")
            staging.mkdir()
            extract(sdist, staging)
        apply_patches(staging)
        n = sync(staging, out)
        log(f"{n} file(s) updated in {out}")
    stamp_file.write_text(stamp)
    print(out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
