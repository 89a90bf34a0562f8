"""The speed model: how fast a model will think on this machine, before it is loaded.

Decoding one token reads the weights (all but an untied input-embedding table, of
which one row is read) and the KV cache so far, so it is bound by memory bandwidth; and
it computes each weight matrix's output rows, each of which costs a CPU time of its own
(its sum, its scales) whatever its length:

    seconds per token = (weights read + KV bytes per token × context) ÷ (bandwidth × fraction)
                        + layers × seconds per layer
                        + output rows × operations per row ÷ compute rate

``fraction`` is how much of the bandwidth an engine reaches on a kind of device; the
per-layer time is what every layer costs whatever its size (kernel launches on a GPU);
the per-row cost is in units of the machine's measured compute rate, so a faster CPU
pays less of it. All three are constants fitted to measurements (``EFFICIENCY`` says
which). Reading a prompt is bound by compute: two operations per weight per token, at
the device's effective rate, with the weights in types that multiply more slowly
counted more times (``prompt_type_factors``). A *thought* of N tokens from an empty context takes
N × the time of a token at context N/2 (the KV cache grows linearly), and a family's
medium effort budget is the typical thought.

The machine's bandwidth: ``QWQ_EDGE_BANDWIDTH`` if set (on a CPU, the compute rate is then
taken in proportion to it, ``CPU_OPERATIONS_PER_BYTE``); on Apple Silicon with the model on
the GPU, the chip's published figure; else the probe (``system/bandwidth.py``), which also
measures the compute rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ..architecture.shape import ModelShape
from ..errors import InvalidRequestError
from ..reasoning.effort import EFFORTS
from ..system.bandwidth import AppleChip, measured_speed, this_apple_chip
from ..system.machine import apple_silicon, gpu_offload_supported, metal_available
from .planner import parse_size

BANDWIDTH_ENV = "QWQ_EDGE_BANDWIDTH"
MIN_SPEED_ENV = "QWQ_EDGE_MIN_SPEED"
#: The first run's default floor: a medium thought within this many seconds.
THOUGHT_SECONDS_FLOOR = 300
GB = 1e9


@dataclass(frozen=True)
class Efficiency:
    """How close an engine comes to the hardware on one kind of device, and where the figures come from."""

    #: Of the memory bandwidth, what reading the weights and the KV cache reaches.
    fraction: float
    #: What every layer adds to each token, whatever its size.
    layer_seconds: float
    #: CPU: of the probe's float32 matrix-product rate, what prompt processing reaches: the
    #: compute rate, which also scales ``row_operations`` (the two are fitted together).
    compute_fraction: float
    source: str
    #: What each output row of a decoded token costs, in operations at the compute rate.
    row_operations: float = 0.0
    #: GGUF types a prompt is multiplied by more slowly than K-quants, and how many times slower.
    prompt_type_factors: tuple[tuple[str, float], ...] = ()


#: Fitted by ``benchmarks/speed_model.py``: llama.cpp on this project's 2-core CPU machine
#: (the fixture and random 1.5B/3B/7B Q4_K_M models); on Metal, to the 7B Q4_0 decode
#: speeds of llama.cpp's discussion #4167 (M1 to M4 Max, 68 to 800 GB/s).
LLAMA_CPP_CPU = Efficiency(
    fraction=0.77,
    layer_seconds=0.0,
    compute_fraction=0.84,
    source="fitted to llama.cpp on this project's 2-core CPU machine",
    row_operations=11_600,
    prompt_type_factors=(("Q5_0", 2.1), ("Q8_0", 1.5)),
)
METAL = Efficiency(0.90, 0.16e-3, 1.0, "fitted to llama.cpp's Metal decode speeds (discussion #4167)")
#: By engine and device ("metal" stands for any GPU). MLX's own speed has not been fitted: it takes llama.cpp's.
EFFICIENCY = {
    ("llama.cpp", "cpu"): LLAMA_CPP_CPU,
    ("llama.cpp", "metal"): METAL,
    ("mlx", "metal"): replace(METAL, source="llama.cpp's Metal figures (MLX's own not fitted)"),
    ("mlx", "cpu"): replace(LLAMA_CPP_CPU, source="llama.cpp's CPU figures (MLX's own not fitted)"),
}
#: A CPU's effective compute rate per byte/s of bandwidth, for when only ``QWQ_EDGE_BANDWIDTH`` is
#: given: this machine's ratio (0.84 × the probe's matrix-product rate ÷ its bandwidth, 8.2 to 9.4
#: over the speed model's three runs).
CPU_OPERATIONS_PER_BYTE = 8.6
#: Effective operations per second per GPU core for prompt processing, by chip generation:
#: discussion #4167's 7B Q4_0 prompt speeds × 2 × its 6.48 billion matrix weights ÷ GPU cores.
METAL_FLOPS_PER_GPU_CORE = {"M1": 210e9, "M2": 228e9, "M3": 246e9, "M4": 286e9}


@dataclass(frozen=True)
class MachineSpeed:
    """What the speed model knows of this machine for one engine."""

    engine: str
    device: str
    bandwidth_bytes_per_s: float
    efficiency: Efficiency
    #: Where the bandwidth comes from, in words.
    source: str
    #: Effective operations per second for prompt processing (0: not known).
    compute_flops: float = 0.0

    def describe(self) -> str:
        return f"{self.bandwidth_bytes_per_s / GB:.0f} GB/s ({self.source}), {self.engine} on {self.device}"


def decode_seconds(machine: MachineSpeed, shape: ModelShape, kv_cache: str = "f16", context: float = 0) -> float:
    """Seconds to decode one token of ``shape`` at ``context`` tokens of KV cache."""
    efficiency = machine.efficiency
    read = shape.decode_bytes + shape.kv_bytes_per_token(kv_cache) * context
    seconds = read / (machine.bandwidth_bytes_per_s * efficiency.fraction) + shape.layers * efficiency.layer_seconds
    if machine.compute_flops > 0:
        seconds += shape.output_rows * efficiency.row_operations / machine.compute_flops
    return seconds


def decode_tokens_per_s(machine: MachineSpeed, shape: ModelShape, kv_cache: str = "f16", context: float = 0) -> float:
    """Predicted decode speed of ``shape`` at ``context`` tokens."""
    return 1 / decode_seconds(machine, shape, kv_cache, context)


def prefill_tokens_per_s(machine: MachineSpeed, shape: ModelShape) -> float:
    """Predicted prompt-processing speed: two operations per weight per token, the slower types'
    weights counted as many times as they are slower (0 when the compute rate or the weights are unknown)."""
    if machine.compute_flops <= 0 or shape.matmul_parameters <= 0:
        return 0.0
    factors = dict(machine.efficiency.prompt_type_factors)
    slower = sum((factors.get(kind, 1.0) - 1) * count for kind, count in shape.matmul_types)
    return machine.compute_flops / (2 * (shape.matmul_parameters + slower))


def thought_seconds(tokens: int, tokens_per_s_at_middle: float) -> float:
    """A thought of ``tokens`` from an empty context: each token's time grows linearly with the
    context, so the whole takes ``tokens`` × the time of the token in the middle."""
    return tokens / tokens_per_s_at_middle


def duration(seconds: float) -> str:
    """``40 s``, ``14 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Prediction:
    """A model's predicted speed here, over a typical thought."""

    #: Over the thought: its tokens ÷ its seconds (the speed at its middle).
    decode_tokens_per_s: float
    thought_tokens: int
    #: Prompt processing (0: not known).
    prefill_tokens_per_s: float = 0.0

    @property
    def thought_seconds(self) -> float:
        return thought_seconds(self.thought_tokens, self.decode_tokens_per_s)

    def short(self) -> str:
        """``6.1 tok/s`` for a table cell."""
        return f"{self.decode_tokens_per_s:.1f} tok/s" if self.decode_tokens_per_s < 100 else "100+ tok/s"

    def describe(self) -> str:
        """``~6.1 tokens/s: a medium thought (~2,048 tokens) ≈ 6 min``."""
        return (
            f"~{self.decode_tokens_per_s:.1f} tokens/s: a medium thought (~{self.thought_tokens:,} tokens) "
            f"≈ {duration(self.thought_seconds)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
            "predicted_prefill_tokens_per_s": round(self.prefill_tokens_per_s, 1) or None,
            "thought_tokens": self.thought_tokens,
            "predicted_thought_seconds": round(self.thought_seconds, 1),
        }


def medium_thought(effort: dict[str, int] | None) -> int:
    """A family's medium effort budget (the presets' when it names none): the typical thought."""
    return (effort or {}).get("medium") or EFFORTS["medium"].max_thinking_tokens or 2048


def predict(
    shape: ModelShape, kv_cache: str, machine: MachineSpeed, thought_tokens: int, prompt_tokens: int = 0
) -> Prediction:
    """``shape``'s speed over a thought of ``thought_tokens`` after ``prompt_tokens`` of prompt."""
    rate = decode_tokens_per_s(machine, shape, kv_cache, prompt_tokens + thought_tokens / 2)
    return Prediction(rate, thought_tokens, prefill_tokens_per_s(machine, shape))


def engine_device(engine: str) -> str:
    """Where ``engine`` runs a model here: ``metal`` (Apple's GPU), ``gpu`` (another GPU) or ``cpu``."""
    on_gpu = metal_available() if engine == "mlx" else gpu_offload_supported()
    if not on_gpu:
        return "cpu"
    return "metal" if apple_silicon() else "gpu"


def bandwidth_override() -> float | None:
    """``QWQ_EDGE_BANDWIDTH`` in bytes per second (``50GB``, ``50 GB/s``, ``400e9``), if set."""
    text = os.environ.get(BANDWIDTH_ENV)
    if text is None:
        return None
    cleaned = text.strip().removesuffix("/s").removesuffix("/S")
    try:
        value = float(cleaned)
    except ValueError:
        try:
            value = float(parse_size(cleaned, BANDWIDTH_ENV))
        except InvalidRequestError:
            value = 0.0
    if not value > 0:
        raise InvalidRequestError(f"{BANDWIDTH_ENV} must be bytes per second such as 50GB/s, not {text!r}")
    return value


def _apple_compute(chip: AppleChip) -> float:
    return chip.gpu_cores * METAL_FLOPS_PER_GPU_CORE.get(chip.generation, min(METAL_FLOPS_PER_GPU_CORE.values()))


def machine_speed(engine: str = "llama.cpp", *, refresh: bool = False) -> MachineSpeed | None:
    """This machine's figures for ``engine`` (``None`` on a GPU other than Apple's, unless
    ``QWQ_EDGE_BANDWIDTH`` gives its bandwidth); ``refresh``: probe again."""
    device = engine_device(engine)
    efficiency = EFFICIENCY.get((engine, "cpu" if device == "cpu" else "metal"), LLAMA_CPP_CPU)
    override = bandwidth_override()
    chip = this_apple_chip() if device == "metal" else None
    if override is not None:
        flops = _apple_compute(chip) if chip else override * CPU_OPERATIONS_PER_BYTE if device == "cpu" else 0.0
        return MachineSpeed(engine, device, override, efficiency, BANDWIDTH_ENV, flops)
    if chip is not None:
        source = f"Apple {chip.name}'s published figure"
        return MachineSpeed(engine, device, chip.bandwidth_bytes_per_s, efficiency, source, _apple_compute(chip))
    if device != "cpu":
        return None
    probe = measured_speed(refresh)
    source = f"measured here on {probe.measured_at[:10]}"
    flops = probe.matmul_flops * efficiency.compute_fraction
    return MachineSpeed(engine, device, probe.bandwidth_bytes_per_s, efficiency, source, flops)


def min_speed(given: float | None = None) -> float | None:
    """The first run's floor in tokens/s: ``--min-speed``, else ``QWQ_EDGE_MIN_SPEED``, else
    ``None`` (the default: a medium thought within ``THOUGHT_SECONDS_FLOOR``)."""
    if given is not None:
        return given
    text = os.environ.get(MIN_SPEED_ENV)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidRequestError(f"{MIN_SPEED_ENV} must be a number of tokens per second above 0, not {text!r}")
    return value


def floor_for(prediction: Prediction, floor: float | None) -> float:
    """The speed a model must reach: ``floor``, or a medium thought within ``THOUGHT_SECONDS_FLOOR``."""
    return floor if floor is not None else prediction.thought_tokens / THOUGHT_SECONDS_FLOOR


def fast_enough(prediction: Prediction | None, floor: float | None) -> bool:
    """Whether a model thinks at or above the floor here (an unknown speed counts as fast enough)."""
    return prediction is None or prediction.decode_tokens_per_s >= floor_for(prediction, floor)


def describe_floor(prediction: Prediction, floor: float | None) -> str:
    """``6.8 tokens/s (a medium thought within 5 min)`` or ``10 tokens/s (--min-speed)``."""
    if floor is not None:
        return f"{floor:g} tokens/s (--min-speed or {MIN_SPEED_ENV})"
    return f"{floor_for(prediction, None):.1f} tokens/s (a medium thought within {duration(THOUGHT_SECONDS_FLOOR)})"
