"""Meta-tests that keep the conventions honest (after NetBox's test_missing_filters)."""

import ast
import inspect
from pathlib import Path

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver

from provision.api.urls import router

ROOT = Path(__file__).resolve().parent.parent
PROJECT_APPS = ("provision", "licenses", "usage", "crm_sync")
WRITE_METHODS = {
    "save",
    "delete",
    "update",
    "create",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
}


def project_models():
    for app_label in PROJECT_APPS:
        yield from apps.get_app_config(app_label).get_models()


@pytest.mark.parametrize("model", list(project_models()), ids=lambda m: m._meta.label)
def test_every_model_has_a_docstring_saying_what_a_row_is(model):
    # Django fills in "Name(field, ...)" when a model has no docstring of its own.
    assert model.__doc__ and not model.__doc__.startswith(f"{model.__name__}(")


@pytest.mark.parametrize("model", list(project_models()), ids=lambda m: m._meta.label)
def test_every_status_like_field_uses_text_choices(model):
    for field in model._meta.concrete_fields:
        if field.name in {
            "status",
            "state",
            "kind",
            "source",
            "role",
            "target",
            "trigger",
            "method",
            "actor_kind",
            "plan",
            "deployment",
            "channel",
        }:
            assert field.choices, f"{model._meta.label}.{field.name} has no choices"


@pytest.mark.parametrize("prefix, viewset, basename", router.registry, ids=lambda v: str(v))
def test_every_api_list_uses_the_models_filterset(prefix, viewset, basename):
    filterset_class = getattr(viewset, "filterset_class", None)
    assert filterset_class is not None, f"{viewset.__name__} has no filterset_class"
    model = viewset.serializer_class.Meta.model
    assert filterset_class._meta.model is model
    # In the model's app, or in the app that serves the endpoint (the cockpit lists customers
    # with the usage figures the usage app computes).
    modules = {f"{model._meta.app_label}.filters", f"{viewset.__module__.split('.')[0]}.filters"}
    assert filterset_class.__module__ in modules, "FilterSets live in <app>/filters.py"


def _view_functions(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_functions(pattern.url_patterns, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern):
            yield namespace, pattern


def test_every_console_page_checks_a_role():
    console = [
        (ns, p) for ns, p in _view_functions(get_resolver().url_patterns) if ns in PROJECT_APPS
    ]
    assert console, "no console pages found"
    for _, pattern in console:
        assert hasattr(pattern.callback, "role_check"), (
            f"{pattern.name} is not wrapped in provision.decorators.role_required"
        )


def _thin_modules():
    for app_label in PROJECT_APPS:
        base = ROOT / app_label
        for name in ("views.py", "tasks.py", "api/views.py"):
            path = base / name
            if path.exists():
                yield path
        for command in (base / "management" / "commands").glob("*.py"):
            # seed_scale bulk-loads synthetic benchmark data on purpose (see its docstring).
            if command.name != "seed_scale.py":
                yield command


@pytest.mark.parametrize("path", list(_thin_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_views_tasks_and_commands_do_not_write_models_directly(path):
    """Interfaces call services; a `.save()` or `.objects.create()` here bypasses the audit."""
    tree = ast.parse(path.read_text())
    offenders = [
        f"line {node.lineno}: .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in WRITE_METHODS
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id in {"form", "self"})
    ]
    assert not offenders, f"{path.name} writes directly: {offenders}"


def _service_functions():
    for app_label in PROJECT_APPS:
        module = __import__(f"{app_label}.services", fromlist=["*"])
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module.__name__ and not name.startswith("_"):
                yield f"{app_label}.{name}", function


@pytest.mark.parametrize("name, function", list(_service_functions()), ids=lambda v: str(v))
def test_services_are_keyword_only(name, function):
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not positional, f"{name} takes positional parameters {positional}"


def _commands():
    for app_label in PROJECT_APPS:
        for path in (ROOT / app_label / "management" / "commands").glob("*.py"):
            if path.name != "__init__.py":
                yield path.stem


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_management_command_has_a_test(command):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    assert f'"{command}"' in tests, f"no test calls the {command} command"
