"""README.md's configuration reference names every environment variable the code reads, and
only those: the settings classes' variables (``env_prefix`` + field) and the direct reads
(``os.environ``/``os.getenv``/typer ``envvar=``, the Rust core's ``std::env::var``) found by
parsing the sources. The generated tables equal what ``scripts/gen_env_docs.py`` prints now,
so a new setting fails this test until the README is regenerated.

The packages read the environment only through typed settings classes (``BaseSettings`` in a
``config``/``settings`` module): a direct read in their sources fails here; setting a variable
for a library they run (``os.environ.setdefault``) is allowed for the variables listed."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic_settings import BaseSettings

from finpredict.common.config import ClientSettings, ServiceSettings, env_var_name

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `uv run --locked python scripts/gen_env_docs.py --write`"
# The installed packages' sources (the test kit is dev-only, like the tests) and their settings modules.
SRC_DIRS = ("libs/*/src", "services/*/src", "pipelines/src", "crates/drift_core/bindings/python/python")
NOT_SRC = ("libs/api/src", "libs/testkit/src")
SETTINGS_MODULES = frozenset({"config.py", "settings.py"})
# What the packages may set (``os.environ.setdefault``) for the libraries they run, where no settings
# class can: Ray reads its variables at import and in its workers, W&B and OpenMP their own.
SET_FOR_LIBRARIES = frozenset(
    {
        "RAY_USAGE_STATS_ENABLED",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV",
        "RAY_DISABLE_FAILURE_SIGNAL_HANDLER",
        "OMP_WAIT_POLICY",
        "WANDB_SILENT",
        "WANDB_DISABLE_GIT",
    }
)


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


def _src_roots() -> list[Path]:
    roots = [path for pattern in SRC_DIRS for path in sorted(ROOT.glob(pattern))]
    return [root for root in roots if root.relative_to(ROOT).as_posix() not in NOT_SRC]


def _settings_classes_by_import() -> list[type[BaseSettings]]:
    """Independently of the generator: every BaseSettings subclass in the packages' ``config`` and
    ``settings`` modules (so one defined anywhere else makes the generator's list differ)."""
    classes = []
    for src in _src_roots():
        for path in sorted(p for name in SETTINGS_MODULES for p in src.rglob(name)):
            name = ".".join(path.relative_to(src).with_suffix("").parts)
            module = importlib.import_module(name)
            classes += [
                obj
                for _, obj in inspect.getmembers(module, inspect.isclass)
                if issubclass(obj, BaseSettings)
                and obj is not ServiceSettings
                and obj.__module__ == module.__name__
            ]
    return classes


def _settings_variables() -> set[str]:
    return {env_var_name(cls, name) for cls in _settings_classes_by_import() for name in cls.model_fields}


def _services() -> list[str]:
    return [
        str(cls.model_config.get("env_prefix", "")).removeprefix("FINPREDICT_").rstrip("_")
        for cls in _settings_classes_by_import()
        if issubclass(cls, ServiceSettings)
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
    expected = {f"{cls.__module__}.{cls.__qualname__}" for cls in _settings_classes_by_import()}
    assert {
        "finpredict.gateway.config.GatewaySettings",
        "finpredict.registry.config.RegistrySettings",
        "finpredict.model_server.config.ModelServerSettings",
        "finpredict.model_server.config.ReplicaSettings",
        "finpredict.monitor.config.MonitorSettings",
        "finpredict.common.config.ClientSettings",
        "finpredict.pipelines.config.PipelineSettings",
        "finpredict.pipelines.config.WandbSettings",
    } <= expected
    found = {f"{cls.__module__}.{cls.__qualname__}" for _, cls in gen.settings_classes(ROOT)}
    assert found == expected, "a settings class outside a config/settings module, or one the generator misses"
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
    settings_vars = _settings_variables()
    read_vars = {r.var for r in reads if r.var is not None}  # type: ignore[attr-defined]
    assert {"FINPREDICT_REGISTRY_TARGET", "FINPREDICT_TOKEN", "WANDB_MODE"} <= settings_vars
    assert "DRIFT_CORE_NUM_THREADS" in read_vars
    needed = settings_vars | read_vars
    documented = gen.documented_variables(section, _services(), _prefixes(needed))
    missing = sorted(needed - documented)
    assert missing == [], f"README.md's Configuration section does not name {missing}: {REGENERATE}"


def test_readme_names_no_variable_that_nothing_reads(section: str, reads: list[object]) -> None:
    settings_vars = _settings_variables()
    read_vars = {r.var for r in reads if r.var is not None}  # type: ignore[attr-defined]
    set_by_tasks = set(gen.taskfile_env(ROOT))
    known = settings_vars | read_vars | set_by_tasks
    documented = gen.documented_variables(section, _services(), _prefixes(known))
    assert "FINPREDICT_GATEWAY_HOST" in documented  # the <SERVICE> rows are expanded
    stale = sorted(documented - known)
    assert stale == [], f"README.md documents variables nothing reads: {stale}: {REGENERATE}"


def test_every_direct_read_has_a_meaning(reads: list[object]) -> None:
    settings_vars = _settings_variables()
    direct = {r.var for r in reads if r.var is not None} - settings_vars  # type: ignore[attr-defined]
    assert sorted(direct - set(gen.OTHER_VARIABLES)) == [], (
        "add them to OTHER_VARIABLES in scripts/gen_env_docs.py"
    )
    assert sorted(set(gen.OTHER_VARIABLES) - direct) == [], "OTHER_VARIABLES names variables nothing reads"


def test_readme_tables_are_the_generator_output(section: str) -> None:
    current = gen.generated_part(section)
    assert current is not None, f"README.md's Configuration section has no generated part: {REGENERATE}"
    assert current == gen.render(ROOT), f"README.md's configuration tables are out of date: {REGENERATE}"


def _direct_reads_in_packages(reads: list[object]) -> list[object]:
    """The reads in the packages' sources outside their settings modules that are not a variable
    set for a library."""
    roots = tuple(f"{root.relative_to(ROOT).as_posix()}/" for root in _src_roots())
    return [
        r
        for r in reads
        if r.path.startswith(roots)  # type: ignore[attr-defined]
        and Path(r.path).name not in SETTINGS_MODULES  # type: ignore[attr-defined]
        and not (r.how == "os.environ.setdefault" and r.var in SET_FOR_LIBRARIES)  # type: ignore[attr-defined]
    ]


VIOLATIONS = """
import os
import typer

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["WANDB_DIR"] = "/tmp/wandb"
env = {**os.environ, "FINPREDICT_TRIGGER": "manual"}

os.environ.setdefault("FINPREDICT_SOMETHING", "1")
os.getenv("FINPREDICT_TOKEN")
os.environ.get("WANDB_MODE", "")
Target = typer.Option("--target", envvar="FINPREDICT_GATEWAY_TARGET")
"""


def test_the_rule_tells_reads_from_writes() -> None:
    found, _ = gen.scan_source(VIOLATIONS, "services/gateway/src/finpredict/gateway/example.py")
    flagged = _direct_reads_in_packages(found)
    assert [(r.var, r.how) for r in flagged] == [  # type: ignore[attr-defined]
        ("FINPREDICT_SOMETHING", "os.environ.setdefault"),
        ("FINPREDICT_TOKEN", "os.getenv"),
        ("WANDB_MODE", "os.environ.get"),
        ("FINPREDICT_GATEWAY_TARGET", "envvar="),
    ]
    found, _ = gen.scan_source(VIOLATIONS, "services/gateway/src/finpredict/gateway/config.py")
    assert _direct_reads_in_packages(found) == []  # a settings module may


def test_packages_read_the_environment_only_through_settings_classes(reads: list[object]) -> None:
    direct = [f"{r.path}:{r.line}: {r.how} {r.var}" for r in _direct_reads_in_packages(reads)]  # type: ignore[attr-defined]
    assert direct == [], (
        "read these through a pydantic-settings class in the package's config/settings module "
        "(finpredict.common.config.load_settings; the command lines share ClientSettings)"
    )


def test_every_command_line_group_shares_the_client_settings() -> None:
    """The token and the addresses are defined once: no other settings class defines them."""
    client_vars = {env_var_name(ClientSettings, name) for name in ClientSettings.model_fields}
    for cls in _settings_classes_by_import():
        if cls is ClientSettings:
            continue
        own = {env_var_name(cls, name) for name in cls.model_fields}
        assert not own & client_vars, f"{cls.__qualname__} redefines {sorted(own & client_vars)}"
