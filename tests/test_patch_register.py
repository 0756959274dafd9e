"""The patch register (integration/patch_register.py) holds every bend of vLLM: each entry's
targets exist in the installed vLLM, and every private vLLM name our code imports, reads,
writes or overrides is listed there."""

from __future__ import annotations

import ast
import pathlib
import re

from vllm_elastic.integration.patch_register import KINDS, REGISTER, touch_exists

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vllm_elastic"


def registered_names() -> set[str]:
    return {re.split(r"[.:#]", t)[-1] for bend in REGISTER for t in bend.touches}


def trees() -> dict[str, ast.AST]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def our_private_names(all_trees: dict[str, ast.AST]) -> set[str]:
    """Private names vllm_elastic defines itself (functions, attributes it assigns, globals)."""
    names = set()
    for tree in all_trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and (
                    getattr(node.value, "id", None) == "self"
                    or node.attr.startswith("_vllm_elastic")):  # our marker on a wrapper
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_every_bend_is_documented_and_its_targets_exist():
    assert len({b.name for b in REGISTER}) == len(REGISTER)
    for bend in REGISTER:
        assert bend.kind in KINDS, bend.name
        assert bend.touches and bend.site and bend.why and bend.removed_when, bend.name
        missing = [t for t in bend.touches if not touch_exists(t)]
        assert not missing, f"{bend.name}: {missing}"
        assert (bend.apply is not None) == (bend.kind in ("runtime patch", "registry")), bend.name


def test_a_vanished_target_is_detected():
    assert not touch_exists("vllm.v1.request:Request#no_such_field")
    assert not touch_exists("vllm.v1.core.sched.scheduler:Scheduler._no_such_method")
    assert not touch_exists("vllm.no_such_module:X")


def test_every_private_vllm_name_we_touch_is_registered():
    all_trees, registered = trees(), registered_names()
    ours = our_private_names(all_trees)
    unlisted = []
    for path, tree in all_trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm."):
                unlisted += [f"{path}: import {a.name}" for a in node.names
                             if a.name.startswith("_") and a.name not in registered]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                    not node.attr.startswith("__") and node.attr not in ours and \
                    node.attr not in registered:
                unlisted.append(f"{path}:{node.lineno}: .{node.attr}")
    assert not unlisted, "private vLLM names outside the patch register:\n" + "\n".join(unlisted)


def test_every_private_vllm_method_we_override_is_registered():
    from vllm_elastic.engine.runner import DiffusionModelRunner
    from vllm_elastic.engine.scheduler import DiffusionScheduler
    from vllm_elastic.engine.worker import DiffusionWorker

    registered = registered_names()
    for cls in (DiffusionScheduler, DiffusionModelRunner, DiffusionWorker):
        base = cls.__mro__[1]
        overridden = [n for n in vars(cls) if n.startswith("_") and not n.startswith("__")
                      and n != "_abc_impl"  # abc bookkeeping, not a method
                      and hasattr(base, n)]
        assert set(overridden) <= registered, (cls.__name__, overridden)
