"""Both backends meet the contract of llmpy/ops.py: every attribute and op it lists, each op
taking the contract's arguments (a backend may add keyword arguments with defaults). llmpy.cpu is
imported; llmpy.cuda, which needs CuPy and a GPU, is read from its source (what its __init__
exports, and the signatures of the functions it exports). The fused ops are llmpy/fused.py's:
a backend that does not define one gets its composition, which uses primitives only."""
import ast
import inspect
from pathlib import Path

from llmpy import cpu, fused
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


def composed_of(name):
    """The primitives that fused op `name`'s composition calls."""
    return set(used_of_ops(inspect.getsource(getattr(fused, name))))


def test_the_fused_ops_are_the_contracts_and_take_its_arguments():
    for name in fused.FUSED:
        params = list(inspect.signature(getattr(fused, name)).parameters.values())
        assert params[0].name == "ops", name
        assert required(params[1:]) == contract_arity(name), name


def test_each_composition_calls_primitives_of_the_contract_only():
    primitives = set(CONTRACT_OPS) - set(fused.FUSED)
    for name in fused.FUSED:
        assert composed_of(name) and composed_of(name) <= primitives, name


def test_cuda_backend_meets_the_contract():
    exports = cuda_exports()
    primitives = set(CONTRACT_OPS) - set(fused.FUSED)
    composed = set(fused.FUSED) - set(exports)         # run as llmpy/fused.py's compositions
    needed = primitives & (used_by_the_program() | set().union(*map(composed_of, composed)))
    missing = (CONTRACT_ATTRIBUTES | needed) - set(exports)
    assert not missing, f"llmpy.cuda lacks {sorted(missing)}"
    for name in set(CONTRACT_OPS) & set(exports):
        fn = exports[name]
        assert isinstance(fn, ast.FunctionDef), f"{name} is not a function of llmpy.cuda"
        args = fn.args.posonlyargs + fn.args.args
        assert len(args) - len(fn.args.defaults) == contract_arity(name), name


def test_cuda_backend_gets_the_composition_of_each_fused_op_it_does_not_define():
    init = (ROOT / "llmpy" / "cuda" / "__init__.py").read_text()
    assert "fused.install(sys.modules[__name__])" in init


def used_of_ops(source):
    """Every `ops.X` and `self.ops.X` in the source: what it uses of a backend."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "ops") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "ops"):
                yield node.attr


def used_by_the_program():
    """What the model, the sampler's cache, data parallelism and the program use of a backend."""
    used = set()
    for path in ("llmpy/gpt2.py", "llmpy/kvcache.py", "llmpy/optim.py", "llmpy/distributed.py", "train_gpt2.py"):
        used |= set(used_of_ops((ROOT / path).read_text()))
    return used


def test_the_contract_lists_everything_the_model_and_program_use():
    used = used_by_the_program()
    assert {"matmul_forward", "adamw_update", "capture", "xp"} <= used     # the scan sees them
    assert used <= set(CONTRACT_OPS) | CONTRACT_ATTRIBUTES, sorted(used - set(CONTRACT_OPS) - CONTRACT_ATTRIBUTES)
