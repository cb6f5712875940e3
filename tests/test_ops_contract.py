"""Both backends meet the contract of llmpy/ops.py: every attribute and op it lists, each op
taking the contract's arguments (a backend may add keyword arguments with defaults). llmpy.cpu is
imported; llmpy.cuda, which needs CuPy and a GPU, is read from its source (what its __init__
exports, and the signatures of the functions it exports)."""
import ast
import inspect
from pathlib import Path

from llmpy import cpu
from llmpy.ops import Ops

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_OPS = {name: fn for name, fn in vars(Ops).items()
                if callable(fn) and not name.startswith("_")}
CONTRACT_ATTRIBUTES = set(Ops.__annotations__)


def required(params):
    """The number of arguments given without a default (self excluded)."""
    return sum(1 for p in params if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self")


def contract_arity(name):
    return required(inspect.signature(CONTRACT_OPS[name]).parameters.values())


def test_cpu_backend_meets_the_contract():
    assert isinstance(cpu, Ops)
    for name in CONTRACT_OPS:
        assert required(inspect.signature(getattr(cpu, name)).parameters.values()) == contract_arity(name), name


def cuda_exports():
    """{exported name: (ast of the module-level statement or function that defines it)}."""
    package = ROOT / "llmpy" / "cuda"
    init = ast.parse((package / "__init__.py").read_text())
    found = {}
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmpy.cuda."):
            source = ast.parse((package / f"{node.module.rsplit('.', 1)[1]}.py").read_text())
            defs = {d.name: d for d in source.body if isinstance(d, ast.FunctionDef)}
            for alias in node.names:
                found[alias.asname or alias.name] = defs.get(alias.name, alias)
        elif isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def test_cuda_backend_meets_the_contract():
    exports = cuda_exports()
    missing = (set(CONTRACT_OPS) | CONTRACT_ATTRIBUTES) - set(exports)
    assert not missing, f"llmpy.cuda lacks {sorted(missing)}"
    for name in CONTRACT_OPS:
        fn = exports[name]
        assert isinstance(fn, ast.FunctionDef), f"{name} is not a function of llmpy.cuda"
        args = fn.args.posonlyargs + fn.args.args
        assert len(args) - len(fn.args.defaults) == contract_arity(name), name


def used_of_ops(source):
    """Every `ops.X` and `self.ops.X` in the source: what it uses of a backend."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "ops") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "ops"):
                yield node.attr


def test_the_contract_lists_everything_the_model_and_program_use():
    used = set()
    for path in ("llmpy/gpt2.py", "llmpy/optim.py", "llmpy/distributed.py", "train_gpt2.py"):
        used |= set(used_of_ops((ROOT / path).read_text()))
    assert {"matmul_forward", "adamw_update", "capture", "xp"} <= used     # the scan sees them
    assert used <= set(CONTRACT_OPS) | CONTRACT_ATTRIBUTES, sorted(used - set(CONTRACT_OPS) - CONTRACT_ATTRIBUTES)
