"""Rewrite an ONNX voice whose graph draws its own noise into two graphs that take the noise as inputs.

The Piper VITS voice samples Gaussian noise inside its graph (`RandomNormalLike`: the stochastic
duration predictor's noise, scaled by `noise_w`, and the prior's noise, scaled by `noise_scale`), so
the same request gives different audio on every run. Every random node is replaced by a graph
input `noise.<k>` that the caller fills from a seeded numpy Generator, with the same distribution
(standard normal, or uniform on [0, 1), moved to the node's mean and scale, or low and high):

    noise.<k>        float32, the rank of the random output; any size
    noise.<k>.shape  int64 (rank,), a new output: the shape the node needed on this run

Inside the graph the input is zero-padded and sliced to the needed shape, so the caller may pass
more noise than needed (it draws a generous guess); when a needed size exceeds what it passed, it
draws again and reruns, which the `noise.<k>.shape` outputs make possible. The noise for the prior has one
value per output frame, a number only the graph knows until it has run.

The graph is also split before its vocoder (HiFi-GAN, purely convolutional), so that a long
sentence can be vocoded in overlapping windows of bounded memory. The front graph ends at the
vocoder's input (`latent`, (1, 192, frames)); the vocoder graph maps it to the audio. The front
graph also outputs `durations` ((1, 1, ids) float32: the latent frames of each phoneme id, the
rounded-up durations the alignment is built from, as piper's `patch_voice_with_alignment` exposes).

Both graphs are cached as `cache_dir / <stem>-<sha256 of the source, 16 hex>-<version>-{front,vocoder}.onnx`,
written atomically; the rewrite takes a second or two, loading the cached files a fraction of one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from glmtts.engines.embedded.tflite_rewrite import file_digest
from glmtts.files import atomic_output, made_once

_LOGGER = logging.getLogger(__name__)

REWRITE_VERSION = "r2"  # change when the rewrite changes: cached graphs are rebuilt
NOISE_PREFIX = "noise."
NOISE_SHAPE_SUFFIX = ".shape"
LATENT = "latent"
DURATIONS = "durations"
_HASH_CHARS = 16
_NORMAL_OPS = frozenset({"RandomNormal", "RandomNormalLike"})
_UNIFORM_OPS = frozenset({"RandomUniform", "RandomUniformLike"})
_RANDOM_OPS = _NORMAL_OPS | _UNIFORM_OPS | {"Multinomial", "Bernoulli"}
_MIN_OPSET = 13
_VOCODER_PREFIX = "/dec/"  # node names of the HiFi-GAN generator in a VITS export


@dataclass(frozen=True)
class NoiseInput:
    """One noise input of a rewritten graph: its name, the distribution to draw from, its rank."""

    name: str
    distribution: str  # "normal" (mean 0, scale 1) or "uniform" (on [0, 1))
    rank: int

    @property
    def shape_output(self) -> str:
        return self.name + NOISE_SHAPE_SUFFIX


def random_op_types(model: onnx.ModelProto) -> list[str]:
    """Op types of the random nodes a model still has, one per node (subgraphs included)."""
    found = []

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in _RANDOM_OPS:
                found.append(node.op_type)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(model.graph)
    return found


def noise_distributions(metadata: dict[str, str]) -> dict[str, str]:
    """Noise input name -> "normal" or "uniform", from a rewritten front graph's metadata (as
    `onnx.ModelProto.metadata_props` or onnxruntime's `custom_metadata_map` holds it)."""
    return {name: value for name, value in metadata.items() if name.startswith(NOISE_PREFIX)}


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _rank(inferred: dict[str, onnx.ValueInfoProto], tensor: str) -> int:
    value = inferred.get(tensor)
    if value is None or not value.type.tensor_type.HasField("shape"):
        raise ValueError(f"cannot rewrite random node: the rank of {tensor!r} is unknown after shape inference")
    return len(value.type.tensor_type.shape.dim)


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def inputs_for_noise(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[NoiseInput]]:
    """Return a copy of `model` whose random nodes read graph inputs instead; see the module doc.

    Raises ValueError for random nodes in subgraphs, for Multinomial / Bernoulli, and for a random
    output whose rank shape inference cannot tell.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inferred = {v.name: v for v in shape_inference.infer_shapes(model).graph.value_info}
    inferred.update({v.name: v for v in graph.input})
    if len(random_op_types(model)) != sum(node.op_type in _RANDOM_OPS for node in graph.node):
        raise ValueError("random nodes inside subgraphs are not supported")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        raise ValueError(f"the rewrite needs opset {_MIN_OPSET} or newer (int64 Max); the model has {opset}")
    zero = _constant(graph, "noise_rewrite/zero", np.array(0, dtype=np.int64))
    nodes: list[onnx.NodeProto] = []
    noises: list[NoiseInput] = []
    for node in graph.node:
        if node.op_type not in _NORMAL_OPS | _UNIFORM_OPS:
            if node.op_type in _RANDOM_OPS:
                raise ValueError(f"random op {node.op_type} ({node.name}) has no rewrite")
            nodes.append(node)
            continue
        k = len(noises)
        name, prefix = f"{NOISE_PREFIX}{k}", f"noise_rewrite/{k}/"
        output = node.output[0]
        rank = _rank(inferred, output)
        if node.op_type.endswith("Like"):
            need = prefix + "need"
            nodes.append(helper.make_node("Shape", [node.input[0]], [need], name=prefix + "Shape"))
        else:
            need = _constant(graph, prefix + "need", np.array(_attribute(node, "shape", []), dtype=np.int64))
        normal = node.op_type in _NORMAL_OPS
        noise = NoiseInput(name, "normal" if normal else "uniform", rank)
        graph.input.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}.d{i}" for i in range(rank)], noise.distribution)
        )
        shape_output = noise.shape_output
        nodes += [
            helper.make_node("Shape", [name], [prefix + "have"], name=prefix + "ShapeHave"),
            helper.make_node("Sub", [need, prefix + "have"], [prefix + "diff"], name=prefix + "Sub"),
            helper.make_node("Max", [prefix + "diff", zero], [prefix + "short"], name=prefix + "Max"),
            helper.make_node("Sub", [need, need], [prefix + "zeros"], name=prefix + "Zeros"),
            helper.make_node("Concat", [prefix + "zeros", prefix + "short"], [prefix + "pads"], axis=0, name=prefix + "Pads"),
            helper.make_node("Pad", [name, prefix + "pads"], [prefix + "padded"], name=prefix + "Pad"),
            helper.make_node("Slice", [prefix + "padded", prefix + "zeros", need], [prefix + "drawn"], name=prefix + "Slice"),
            helper.make_node("Identity", [need], [shape_output], name=prefix + "ShapeOut"),
        ]
        if normal:
            low, span = float(_attribute(node, "mean", 0.0)), float(_attribute(node, "scale", 1.0))
        else:
            low = float(_attribute(node, "low", 0.0))
            span = float(_attribute(node, "high", 1.0)) - low
        dtype = int(_attribute(node, "dtype", TensorProto.FLOAT))
        drawn = prefix + "drawn"
        if span != 1.0:
            scale = _constant(graph, prefix + "span", np.array(span, dtype=np.float32))
            nodes.append(helper.make_node("Mul", [drawn, scale], [prefix + "scaled"], name=prefix + "Scale"))
            drawn = prefix + "scaled"
        if low != 0.0:
            offset = _constant(graph, prefix + "low", np.array(low, dtype=np.float32))
            nodes.append(helper.make_node("Add", [drawn, offset], [prefix + "moved"], name=prefix + "Move"))
            drawn = prefix + "moved"
        if dtype != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [drawn], [prefix + "cast"], to=dtype, name=prefix + "Cast"))
            drawn = prefix + "cast"
        nodes.append(helper.make_node("Identity", [drawn], [output], name=prefix + "Out"))
        graph.output.append(helper.make_tensor_value_info(shape_output, TensorProto.INT64, [rank]))
        noises.append(noise)
    del graph.node[:]
    graph.node.extend(nodes)
    return model, noises


def _sub_model(model: onnx.ModelProto, inputs: list[onnx.ValueInfoProto], outputs: list[str]) -> onnx.ModelProto:
    """The part of `model` that computes `outputs` (graph outputs, or tensors described in `inputs`)
    from `inputs` (graph inputs or inner tensors)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {t.name: t for t in graph.initializer}
    given = {v.name for v in inputs}
    needed_nodes: set[int] = set()
    needed_initializers: set[str] = set()
    index = {id(node): k for k, node in enumerate(graph.node)}
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        if not tensor or tensor in seen or tensor in given:
            continue
        seen.add(tensor)
        if tensor in initializers:
            needed_initializers.add(tensor)
            continue
        node = producer.get(tensor)
        if node is None:
            raise ValueError(f"cannot split the graph: {tensor!r} is neither computed nor given")
        needed_nodes.add(index[id(node)])
        stack.extend(node.input)
    output_info = {v.name: v for v in [*graph.output, *inputs]}
    sub = helper.make_graph(
        [graph.node[k] for k in sorted(needed_nodes)],
        graph.name,
        inputs,
        [output_info[name] for name in outputs],
        [initializers[name] for name in sorted(needed_initializers)],
    )
    result = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    result.producer_name = "glmtts.onnx_rewrite"
    return result


def vocoder_input(model: onnx.ModelProto) -> str:
    """The one tensor that the VITS vocoder (`/dec/` nodes) reads from the rest of the graph."""
    graph = model.graph
    vocoder = [node for node in graph.node if node.name.startswith(_VOCODER_PREFIX)]
    inside = {out for node in vocoder for out in node.output}
    initializers = {t.name for t in graph.initializer}
    outside = {t for node in vocoder for t in node.input if t and t not in inside and t not in initializers}
    if len(outside) != 1:
        raise ValueError(f"cannot find a single vocoder input among {sorted(outside)}")
    return outside.pop()


def duration_tensor(model: onnx.ModelProto) -> str:
    """The frames-per-phoneme-id tensor of a VITS export: the output of its one Ceil node."""
    found = [out for node in model.graph.node if node.op_type == "Ceil" for out in node.output]
    if len(found) != 1:
        raise ValueError(f"cannot find the one duration (Ceil) tensor among {found}")
    return found[0]


def split_seeded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(front, vocoder): the VITS graph with noise inputs, cut at the vocoder's input (`LATENT`);
    the front graph also outputs the durations (`DURATIONS`)."""
    seeded, noises = inputs_for_noise(model)
    renames = {vocoder_input(seeded): LATENT, duration_tensor(seeded): DURATIONS}
    graph = seeded.graph
    for node in graph.node:  # give the cut and the durations stable names
        node.input[:] = [renames.get(t, t) for t in node.input]
        node.output[:] = [renames.get(t, t) for t in node.output]
    audio_outputs = [v.name for v in graph.output if not v.name.startswith(NOISE_PREFIX)]
    latent = helper.make_tensor_value_info(LATENT, TensorProto.FLOAT, ["batch", "channels", "frames"])
    durations = helper.make_tensor_value_info(DURATIONS, TensorProto.FLOAT, ["batch", 1, "ids"])
    used = {t for node in graph.node for t in node.input}
    graph.output.extend([latent, durations])
    outputs = [LATENT, DURATIONS] + [n.shape_output for n in noises]
    front = _sub_model(seeded, [v for v in graph.input if v.name in used], outputs)
    vocoder = _sub_model(seeded, [latent], audio_outputs)
    helper.set_model_props(front, {noise.name: noise.distribution for noise in noises})
    for part in (front, vocoder):
        onnx.checker.check_model(part)
        if random_op_types(part):
            raise ValueError(f"random ops left after the rewrite: {random_op_types(part)}")
    return front, vocoder


def _write_atomically(data: bytes, target: Path) -> None:
    with atomic_output(target) as out:
        out.write(data)


def seeded_vits_models(source: Path, cache_dir: Path | None) -> tuple[bytes | Path, bytes | Path]:
    """(front, vocoder) for the VITS voice at `source`: cached file paths, or bytes without a cache.

    The names carry the source's content hash and `REWRITE_VERSION`, so a changed source or
    rewrite gets new files; readers never see a partial file.
    """
    if cache_dir is None:
        return _split_parts(source)
    stem = f"{source.stem}-{file_digest(source)[:_HASH_CHARS]}-{REWRITE_VERSION}"
    targets = (cache_dir / f"{stem}-front.onnx", cache_dir / f"{stem}-vocoder.onnx")

    def make() -> tuple[bytes | Path, bytes | Path]:
        parts = _split_parts(source)
        try:
            for data, target in zip(parts, targets, strict=True):
                _write_atomically(data, target)
        except OSError as error:
            _LOGGER.warning("the seeded, split copy of %s not cached (%s); kept in memory", source.name, error)
            return parts
        _LOGGER.info("wrote the seeded, split copy of %s to %s", source.name, cache_dir)
        return targets

    return made_once(targets[0], lambda: targets if all(t.is_file() for t in targets) else None, make)


def _split_parts(source: Path) -> tuple[bytes, bytes]:
    front, vocoder = split_seeded(onnx.load(str(source)))
    return front.SerializeToString(), vocoder.SerializeToString()
