"""README.md's configuration reference names every environment variable the code reads, and
only those: the settings classes' variables (``env_prefix`` + field) and the direct reads
(``os.environ``/``os.getenv``/typer ``envvar=``, the Rust core's ``std::env::var``) found by
parsing the sources. The generated tables equal what ``scripts/gen_env_docs.py`` prints now,
so a new setting fails this test until the README is regenerated."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

from finpredict.common.config import ServiceSettings, env_var_name

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `uv run python scripts/gen_env_docs.py --write`"


def _load() -> ModuleType:
    path = ROOT / "scripts" / "gen_env_docs.py"
    spec = importlib.util.spec_from_file_location("finpredict_gen_env_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load()


@pytest.fixture(scope="module")
def section() -> str:
    return str(gen.readme_section((ROOT / "README.md").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def reads() -> list[object]:
    return list(gen.code_reads(ROOT))


def _settings_classes_by_import() -> list[type[ServiceSettings]]:
    """Independently of the generator: every ServiceSettings subclass in the config modules."""
    classes = []
    for path in sorted(ROOT.glob("services/*/src/finpredict/*/config.py")):
        module = importlib.import_module(f"finpredict.{path.parent.name}.config")
        classes += [
            obj
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, ServiceSettings)
            and obj is not ServiceSettings
            and obj.__module__ == module.__name__
        ]
    return classes


def _services() -> list[str]:
    return [
        str(cls.model_config.get("env_prefix", "")).removeprefix("FINPREDICT_").rstrip("_")
        for cls in _settings_classes_by_import()
    ]


def _prefixes(names: set[str]) -> set[str]:
    return {n.split("_")[0] for n in names} | {"FINPREDICT"}


SAMPLE = """
import os
from os import environ, getenv as ge
from typer import Option

TOKEN_ENV = "S_CONST"

def f(args):
    os.getenv("S_GETENV")
    os.environ["S_SUBSCRIPT"]
    os.environ.get(TOKEN_ENV, "")
    os.environ.setdefault("S_SETDEFAULT", "1")
    environ.pop("S_POP", None)
    ge("S_GETENV_ALIAS")
    if "S_IN" in os.environ:
        pass
    for key in ("S_LOOP_A", "S_LOOP_B"):
        os.environ[key]
    for key in names:
        os.environ[key]
    Option("--x", envvar="S_ENVVAR")
    Option("--y", envvar=["S_LIST_A", "S_LIST_B"])
    os.environ.get(args.token_env)
    os.environ.get(args.something)
    os.environ["S_WRITTEN"] = "not a read"
    env = {**os.environ, "S_CHILD": "not a read"}
    other.get("S_NOT_ENVIRON")

class Args:
    token_env: str = Field(default="S_VIA_FIELD", description="...")
"""


def test_the_collector_finds_every_kind_of_read() -> None:
    found, env_fields = gen.scan_source(SAMPLE, "sample.py")
    named = {r.var for r in found if r.var is not None}
    assert named == {
        "S_CONST",
        "S_GETENV",
        "S_SUBSCRIPT",
        "S_SETDEFAULT",
        "S_POP",
        "S_GETENV_ALIAS",
        "S_IN",
        "S_ENVVAR",
        "S_LIST_A",
        "S_LIST_B",
        "S_LOOP_A",
        "S_LOOP_B",
    }
    unresolved = sorted(r.how for r in found if r.var is None)
    assert unresolved == ["os.environ.get", "os.environ.get via .token_env", "os.environ[]"]
    assert env_fields == {"token_env": "S_VIA_FIELD"}


def test_the_generator_finds_every_settings_class() -> None:
    expected = {cls.__qualname__ for cls in _settings_classes_by_import()}
    assert len(expected) >= 4  # gateway, registry, model-server, monitor
    found = {cls.__qualname__ for _, cls in gen.settings_classes(ROOT)}
    assert found == expected
    for _, cls in gen.settings_classes(ROOT):
        assert [s.var for s in gen.settings_of(cls, ROOT)] == [
            env_var_name(cls, name) for name in cls.model_fields
        ]


def test_every_read_names_its_variable(reads: list[object]) -> None:
    unresolved = [r for r in reads if r.var is None]  # type: ignore[attr-defined]
    assert unresolved == [], (
        "environment reads whose variable cannot be told from the source (use a literal, a module "
        f"constant or a setting named *_env): {unresolved}"
    )


def test_every_variable_the_code_reads_is_documented(section: str, reads: list[object]) -> None:
    settings_vars = {
        env_var_name(cls, name) for cls in _settings_classes_by_import() for name in cls.model_fields
    }
    read_vars = {r.var for r in reads if r.var is not None}  # type: ignore[attr-defined]
    assert {"FINPREDICT_REGISTRY_TARGET", "WANDB_MODE", "DRIFT_CORE_NUM_THREADS"} <= read_vars
    needed = settings_vars | read_vars
    documented = gen.documented_variables(section, _services(), _prefixes(needed))
    missing = sorted(needed - documented)
    assert missing == [], f"README.md's Configuration section does not name {missing}: {REGENERATE}"


def test_readme_names_no_variable_that_nothing_reads(section: str, reads: list[object]) -> None:
    settings_vars = {
        env_var_name(cls, name) for cls in _settings_classes_by_import() for name in cls.model_fields
    }
    read_vars = {r.var for r in reads if r.var is not None}  # type: ignore[attr-defined]
    set_by_tasks = set(gen.taskfile_env(ROOT))
    known = settings_vars | read_vars | set_by_tasks
    documented = gen.documented_variables(section, _services(), _prefixes(known))
    assert "FINPREDICT_GATEWAY_HOST" in documented  # the <SERVICE> rows are expanded
    stale = sorted(documented - known)
    assert stale == [], f"README.md documents variables nothing reads: {stale}: {REGENERATE}"


def test_every_direct_read_has_a_meaning(reads: list[object]) -> None:
    settings_vars = {
        env_var_name(cls, name) for cls in _settings_classes_by_import() for name in cls.model_fields
    }
    direct = {r.var for r in reads if r.var is not None} - settings_vars  # type: ignore[attr-defined]
    assert sorted(direct - set(gen.OTHER_VARIABLES)) == [], (
        "add them to OTHER_VARIABLES in scripts/gen_env_docs.py"
    )
    assert sorted(set(gen.OTHER_VARIABLES) - direct) == [], "OTHER_VARIABLES names variables nothing reads"


def test_readme_tables_are_the_generator_output(section: str) -> None:
    current = gen.generated_part(section)
    assert current is not None, f"README.md's Configuration section has no generated part: {REGENERATE}"
    assert current == gen.render(ROOT), f"README.md's configuration tables are out of date: {REGENERATE}"
