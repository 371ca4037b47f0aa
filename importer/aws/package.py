"""The Lambda zip: the ``importer`` package and its compiled cores, checked to load on Lambda.

The zip is built on this machine, so what can go wrong is a build that Lambda's runtime
cannot load: an extension for another CPython or architecture, one that needs a newer glibc
than the runtime's OS, or a module-level import of a package the runtime lacks.  Each is
refused here with the reason and the fix, before anything is uploaded.  Entries are sorted
with fixed timestamps and modes so two builds are byte-identical.
"""

from __future__ import annotations

import ast
import importlib
import os
import platform
import re
import stat
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_PACKAGE",
    "EXTENSIONS",
    "LAMBDA_RUNTIME_PROVIDES",
    "PackageError",
    "Target",
    "build_package",
    "build_target",
    "check_extension",
    "handler_third_party_imports",
    "lambda_architecture",
    "native_extension",
    "native_extensions",
]

DEFAULT_PACKAGE = "importer-lambda.zip"


# glibc of the Lambda Python runtimes' OS (Amazon Linux 2 up to python3.11,
# Amazon Linux 2023 from python3.12): the extension must not need newer symbols.
RUNTIME_GLIBC: dict[str, tuple[int, int]] = {
    "python3.9": (2, 26),
    "python3.10": (2, 26),
    "python3.11": (2, 26),
    "python3.12": (2, 34),
    "python3.13": (2, 34),
}

# Packages the Lambda Python runtime provides; anything else the handler
# imports at module level must be in the zip (and we ship only `importer`).
LAMBDA_RUNTIME_PROVIDES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
)

_EXCLUDED_DIRS = frozenset({"__pycache__", "tests", "benchmarks", "build", ".pytest_cache"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".c", ".o", ".pyx", ".pxd", ".html", ".pyi")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
_ARCH_TO_ELF = {"x86_64": "x86_64", "arm64": "aarch64"}
_EXT_TAG = re.compile(r"\.cpython-(\d)(\d+)-([a-z0-9_]+)-linux-gnu\.so$")


class PackageError(RuntimeError):
    """The Lambda package cannot be built, or would not load on Lambda."""


@dataclass(frozen=True, slots=True)
class Target:
    """A Lambda runtime + architecture pair, e.g. ``python3.11`` on ``x86_64``."""

    runtime: str
    architecture: str


def build_target() -> Target:
    """The Lambda runtime and architecture matching this interpreter and machine."""
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    machine = platform.machine().lower()
    if machine not in _ARCH_ALIASES:
        raise PackageError(f"no Lambda architecture for this machine ({platform.machine()})")
    return Target(runtime, _ARCH_ALIASES[machine])


def lambda_architecture(name: str) -> str | None:
    """Lambda's name for a machine architecture (``amd64`` -> ``x86_64``), None if it has none."""
    return _ARCH_ALIASES.get(name.lower())


#: The compiled modules the package ships: the core, the HTTP exchange, the C signer,
#: the entity-key digests of the import modes' run map (`importer.modes.ledger` imports them).
EXTENSIONS = ("_native", "_http", "_sign", "_digests")


def native_extension(name: str = "_native") -> Path:
    """The compiled ``importer.<name>`` this interpreter loads."""
    try:
        module = importlib.import_module(f"importer.{name}")
    except ImportError as exc:
        raise PackageError(
            f"importer.{name} is not built: run `pip install -e .` (or "
            "`python setup.py build_ext --inplace`) before packaging the Lambda"
        ) from exc
    path = Path(module.__file__ or "")
    if path.suffix != ".so":
        raise PackageError(f"importer.{name} is not a compiled extension: {path}")
    return path


def native_extensions() -> list[Path]:
    """Every compiled module of `EXTENSIONS` this interpreter loads (one build each)."""
    return [native_extension(name) for name in EXTENSIONS]


def _required_glibc(data: bytes) -> tuple[int, int] | None:
    versions = [
        (int(m.group(1)), int(m.group(2))) for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", data)
    ]
    return max(versions) if versions else None


def check_extension(path: Path, target: Target) -> None:
    """Fail unless the extension's ABI tag and glibc needs fit the Lambda target."""
    match = _EXT_TAG.search(path.name)
    if match is None:
        raise PackageError(
            f"{path.name}: no CPython ABI tag (expected _native.cpython-XY-ARCH-linux-gnu.so); "
            "cannot tell which Lambda runtime it loads on"
        )
    runtime = f"python{match.group(1)}.{match.group(2)}"
    arch = match.group(3)
    if runtime != target.runtime or arch != _ARCH_TO_ELF[target.architecture]:
        raise PackageError(
            f"{path.name} is built for {runtime} on {arch}, but the Lambda is "
            f"{target.runtime} on {target.architecture} ({_ARCH_TO_ELF[target.architecture]}): "
            "rebuild the extension with that interpreter on that architecture"
        )
    needed = _required_glibc(path.read_bytes())
    available = RUNTIME_GLIBC.get(target.runtime)
    if needed and available and needed > available:
        raise PackageError(
            f"{path.name} needs glibc {needed[0]}.{needed[1]} but the {target.runtime} "
            f"Lambda runtime has {available[0]}.{available[1]}: build it on an older glibc "
            "(e.g. a manylinux image) or pick a newer runtime"
        )


def _package_files(package_dir: Path, extensions: Sequence[Path]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d not in _EXCLUDED_DIRS and not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if name.endswith(_EXCLUDED_SUFFIXES) or name.startswith("."):
                continue
            if name.endswith(".so"):
                continue  # only the builds this interpreter loads, added below
            arc = "importer/" + path.relative_to(package_dir).as_posix()
            files[arc] = path
    for extension in extensions:
        files["importer/" + extension.name] = extension
    return files


def _module_imports(source: str, package: str = "importer") -> set[str]:
    """Top-level package names imported at module level (not inside functions)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against `package`
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                if base:
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                pass  # guarded imports are optional by construction
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(source).body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def handler_third_party_imports(files: dict[str, Path]) -> set[str]:
    """Non-stdlib packages the handler pulls in at import time, transitively."""
    sources = {
        arc[: -len(".py")].replace("/", ".").removesuffix(".__init__"): path
        for arc, path in files.items()
        if arc.endswith(".py")
    }
    # a relative import resolves against the importing module's package
    packages = {
        module: module if path.name == "__init__.py" else module.rpartition(".")[0]
        for module, path in sources.items()
    }
    start = "importer.aws.handler"
    if start not in sources:
        return set()
    seen: set[str] = set()
    third_party: set[str] = set()
    todo = [start, "importer"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        text = sources[module].read_text(encoding="utf-8")
        for name in _module_imports(text, packages[module]):
            top = name.split(".")[0]
            if top == "importer":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in sources:
                        todo.append(candidate)
            elif top not in sys.stdlib_module_names:
                third_party.add(top)
    return third_party


def build_package(out_path: Path, *, target: Target | None = None) -> Path:
    """Build the Lambda zip at ``out_path`` and return it.

    Contents: the ``importer`` package (sources and the compiled
    ``importer/_native``, ``_http``, ``_sign`` and ``_digests`` builds this interpreter loads, each
    checked against the target), without caches, tests or
    benchmarks.  No third-party libraries: the Lambda runtime provides boto3,
    and the handler must not need pyarrow or polars (checked).  Entries are
    sorted with fixed timestamps and modes, so two builds are byte-identical.
    """
    import importer

    target = target or build_target()
    extensions = native_extensions()
    for extension in extensions:
        check_extension(extension, target)
    package_dir = Path(importer.__file__).resolve().parent
    files = _package_files(package_dir, extensions)

    missing = sorted(handler_third_party_imports(files) - LAMBDA_RUNTIME_PROVIDES)
    if missing:
        raise PackageError(
            "importer.aws.handler imports at module level packages the Lambda runtime lacks "
            f"and the zip does not ship: {', '.join(missing)}; import them lazily where "
            "they are used, or keep them off the handler's path"
        )

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".importer-lambda-", suffix=".zip", dir=out_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w") as zf:
            for arc in sorted(files):
                path = files[arc]
                info = zipfile.ZipInfo(arc, date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr holds the mode
                mode = 0o755 if arc.endswith(".so") else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                zf.writestr(info, path.read_bytes(), compresslevel=9)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out_path
