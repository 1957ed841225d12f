"""Loading pipelines from a Python file: ``FILE[:PIPELINE]``.

A file is imported under a module name derived from its absolute path, so the runner and every
step process (which load the same file) agree on it, and two files never collide.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from shipyard.errors import NotFound, PipelineDefinitionError
from shipyard.pipelines.dsl import Pipeline, Step


def module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"shipyard_pipeline_{path.stem.replace('-', '_')}_{digest}"


def load_module(file: str | Path) -> ModuleType:
    """Import a pipeline file (once per process); errors in it become one clear line."""
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise NotFound("pipeline file", str(file))
    name = module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineDefinitionError(f"{file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except PipelineDefinitionError:
        del sys.modules[name]
        raise
    except SyntaxError as exc:  # its own file and line: the traceback ends in importlib
        del sys.modules[name]
        where = _user_place(file, path, exc.filename, exc.lineno)
        raise PipelineDefinitionError(
            f"cannot load {file}: {type(exc).__name__}: {exc.msg}{where}"
        ) from None
    except Exception as exc:
        del sys.modules[name]
        # the innermost frame of the pipeline file: deeper ones are in the libraries it calls
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        where = _user_place(file, path, str(path), ours[-1].lineno if ours else None)
        raise PipelineDefinitionError(
            f"cannot load {file}: {type(exc).__name__}: {exc}{where}"
        ) from None
    return module


def _user_place(file: str | Path, path: Path, filename: str | None, line: int | None) -> str:
    """`` (FILE, line N)`` naming the file as the user gave it, or nothing when unknown."""
    if line is None:
        return ""
    shown = file if filename in (None, str(path)) else filename
    return f" ({shown}, line {line})"


def pipelines_in(module: ModuleType) -> dict[str, Pipeline]:
    return {p.name: p for p in vars(module).values() if isinstance(p, Pipeline)}


def split_target(target: str) -> tuple[str, str | None]:
    """``"a/b.py:train"`` → ``("a/b.py", "train")``; ``"a/b.py"`` → ``("a/b.py", None)``."""
    file, sep, name = target.rpartition(":")
    if sep and file and not name.startswith(("\\", "/")):
        return file, name or None
    return target, None


def load_pipeline(target: str) -> tuple[Path, Pipeline]:
    """The pipeline named by ``FILE[:PIPELINE]`` (the file's only pipeline when unnamed)."""
    file, name = split_target(target)
    module = load_module(file)
    found = pipelines_in(module)
    if not found:
        raise PipelineDefinitionError(f"{file} defines no Pipeline")
    if name is None:
        if len(found) > 1:
            raise PipelineDefinitionError(
                f"{file} defines {len(found)} pipelines ({', '.join(sorted(found))}); "
                f"name one: {file}:NAME"
            )
        return Path(file).resolve(), next(iter(found.values()))
    if name not in found:
        raise NotFound(
            "pipeline", name, f"{file} defines: {', '.join(sorted(found))}", candidates=found
        )
    return Path(file).resolve(), found[name]


def find_step(file: str | Path, step_name: str) -> Step:
    """The step function ``step_name`` as seen from the pipeline file (used in step processes)."""
    module = load_module(file)
    for value in vars(module).values():
        if isinstance(value, Step) and value.name == step_name:
            return value
    raise NotFound("step", step_name, f"not defined in or imported by {file}")
