"""Reader for dlib's binary serialization of DNNs (no compiled dlib needed).

dlib writes a network as nested objects: ``add_loss_layer`` (version, loss details, subnet),
each ``add_layer`` as (version, *subnet*, details, trailing state), tag/skip wrappers as
(version, subnet), and the ``add_layer`` directly above the input layer as (version, input
layer, details, trailing state). Because every wrapper writes its subnet before its own
details, the layer details come out in forward order (input first), with the loss in front.

The format is not self-describing: tag and skip wrappers look identical (version 1 and the
subnet), and nothing names the tag ids, so the caller validates the returned chain against
the architecture it expects. Integers use dlib's compact encoding (one control byte holding
the byte count and a sign bit, then little-endian magnitude bytes); floats are a
``float_details`` pair (int64 mantissa, int16 exponent); bools are ASCII ``'0'``/``'1'``;
tensor values are raw little-endian float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from facebench.errors import FacebenchError

# sizeof() of the C++ integer types dlib uses in these records (LP64: long is 8 bytes)
INT, UINT, LONG, ULONG, LONGLONG, INT16, INT64 = 4, 4, 8, 8, 8, 2, 8
_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class DlibFormatError(FacebenchError):
    """The file is truncated, corrupt, or uses a dlib record this reader does not know."""


def encode_int(value: int, signed: bool = True) -> bytes:
    """dlib's integer encoding; used by the tests to build streams by hand."""
    if value < 0 and not signed:
        raise ValueError("negative value for an unsigned integer")
    mag = -value if value < 0 else value
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


class Reader:
    """A cursor over the bytes of a dlib stream; every read checks for truncation."""

    def __init__(self, data: bytes, name: str = "stream"):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> "DlibFormatError":
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos} (corrupt dlib file?)")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise DlibFormatError(
                f"{self.name}: truncated while reading {what} at byte {self.pos} "
                f"(needs {n} bytes, {len(self.data) - self.pos} left)"
            )
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    # --- scalars ---------------------------------------------------------------------------
    def int(self, nbytes: int = INT, signed: bool = True, what: str = "integer") -> int:
        """One control byte (low nibble: byte count, 0x80: negative) then the magnitude."""
        ctrl = self.take(1, what)[0]
        if signed:
            size, neg = ctrl & 0x0F, bool(ctrl & 0x80)
        else:  # dlib keeps the sign bit for unsigned types so that it fails the size test
            size, neg = ctrl & 0x8F, False
        if size == 0 or size > nbytes:
            self.pos -= 1
            raise self.fail(f"bad control byte 0x{ctrl:02x} for a {nbytes}-byte {what}")
        value = int.from_bytes(self.take(size, what), "little")
        limit = 1 << (8 * nbytes - (1 if signed else 0))
        if value >= limit + (1 if neg else 0):
            raise self.fail(f"{what} {value} does not fit in {nbytes} bytes")
        return -value if neg else value

    def uint(self, nbytes: int = ULONG, what: str = "integer") -> int:
        return self.int(nbytes, signed=False, what=what)

    def bool(self, what: str = "bool") -> bool:
        ch = bytes(self.take(1, what))
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"expected '0' or '1' for {what}, found {ch!r}")
        return ch == b"1"

    def string(self, what: str = "string") -> str:
        n = self.uint(ULONG, what=f"length of {what}")
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not ASCII: {raw[:20]!r}") from None

    def peek_string(self) -> Optional[str]:
        """The string at the cursor if one parses there, without consuming it."""
        start = self.pos
        try:
            return self.string()
        except DlibFormatError:
            return None
        finally:
            self.pos = start

    def float(self, what: str = "float") -> float:
        """``float_details``: value = mantissa * 2**exponent (or inf/-inf/nan sentinels)."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            return self._ascii_float(what)
        mantissa = self.int(INT64, what=f"mantissa of {what}")
        exponent = self.int(INT16, what=f"exponent of {what}")
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent >= _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def _ascii_float(self, what: str) -> float:
        """The pre-2013 text encoding: the number in ASCII followed by one space."""
        end = bytes(self.data[self.pos:self.pos + 64]).find(b" ")
        if end < 0:
            raise self.fail(f"unterminated text {what}")
        text = bytes(self.take(end + 1, what)[:-1]).decode("ascii", "replace")
        special = {"inf": math.inf, "ninf": -math.inf, "NaN": math.nan}
        try:
            return special[text] if text in special else float(text)
        except ValueError:
            raise self.fail(f"bad text {what} {text!r}") from None

    # --- tensors ---------------------------------------------------------------------------
    def tensor(self, what: str = "tensor") -> np.ndarray:
        """``resizable_tensor`` version 2: four int64 dims, then raw little-endian float32."""
        self.expect_int(2, f"version of {what}")
        shape = tuple(self.int(LONGLONG, what=f"dimension of {what}") for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative dimension {shape} in {what}")
        count = math.prod(shape)
        raw = self.take(4 * count, f"{what} data {shape}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self, what: str = "alias_tensor") -> Tuple[int, int, int, int]:
        """``alias_tensor`` version 1: only the shape of a view into a layer's params."""
        self.expect_int(1, f"version of {what}")
        return tuple(self.int(LONGLONG, what=f"dimension of {what}") for _ in range(4))

    def expect_int(self, expected, what: str) -> int:
        got = self.int(INT, what=what)
        if got not in (expected if isinstance(expected, tuple) else (expected,)):
            raise self.fail(f"unexpected {what} {got} (expected {expected})")
        return got

    def expect_string(self, allowed: Tuple[str, ...], what: str) -> str:
        got = self.string(what)
        if got not in allowed:
            raise self.fail(f"unexpected {what} {got!r} (expected one of {', '.join(allowed)})")
        return got


@dataclass
class Layer:
    """One node of the chain: ``kind`` names the dlib class, ``fields`` its parsed record."""

    kind: str
    version: str = ""
    fields: Dict[str, Any] = field(default_factory=dict)


def _split(params: np.ndarray, shapes: List[Tuple[int, ...]], r: Reader, what: str):
    """Cut a layer's flat ``params`` tensor into the alias views, checking the total size."""
    flat = params.reshape(-1)
    if any(d < 0 for s in shapes for d in s):
        raise r.fail(f"{what} has a negative view dimension {shapes}")
    need = sum(math.prod(s) for s in shapes)
    if need != flat.size:
        raise r.fail(f"{what} params hold {flat.size} values but its views need {need}")
    out, at = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat[at:at + n].reshape(s))
        at += n
    return out


def _read_con(r: Reader, version: str) -> Dict[str, Any]:
    params = r.tensor("con_ params")
    f: Dict[str, Any] = {"num_filters": r.int(LONG, what="num_filters")}
    for key, size in (("nr", LONG), ("nc", LONG), ("stride_y", INT), ("stride_x", INT),
                      ("padding_y", INT), ("padding_x", INT)):
        f[key] = r.int(size, what=f"con_ {key}")
    filt, bias = r.alias_tensor("con_ filters"), r.alias_tensor("con_ biases")
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        f[key] = r.float(f"con_ {key}")
    f["use_bias"] = r.bool("con_ use_bias") if version in ("con_5", "con_6") else True
    f["use_relu"] = r.bool("con_ use_relu") if version == "con_6" else False
    has_bias = f["use_bias"] and math.prod(bias) > 0
    views = _split(params, [filt] + ([bias] if has_bias else []), r, "con_")
    f["weight"] = views[0]  # (num_filters, in_channels, nr, nc): PyTorch's OIHW
    f["bias"] = views[1].reshape(-1) if has_bias else None
    if filt[0] != f["num_filters"] or filt[2:] != (f["nr"], f["nc"]):
        raise r.fail(f"con_ filter view {filt} disagrees with num_filters/nr/nc")
    return f


def _read_affine(r: Reader, version: str) -> Dict[str, Any]:
    params = r.tensor("affine_ params")
    g, b = r.alias_tensor("affine_ gamma"), r.alias_tensor("affine_ beta")
    mode = r.int(INT, what="affine_ mode")
    disabled = r.bool("affine_ disabled") if version == "affine_2" else False
    gamma, beta = _split(params, [g, b], r, "affine_") if not disabled else (None, None)
    return {"gamma": gamma, "beta": beta, "mode": "conv" if mode == 0 else "fc",
            "disabled": disabled}


def _read_pool(r: Reader, version: str) -> Dict[str, Any]:
    f = {k: r.int(LONG, what=f"pool {k}") for k in ("nr", "nc")}
    f.update({k: r.int(INT, what=f"pool {k}")
              for k in ("stride_y", "stride_x", "padding_y", "padding_x")})
    return f


def _read_fc(r: Reader, version: str) -> Dict[str, Any]:
    f: Dict[str, Any] = {"num_outputs": r.uint(ULONG, what="fc_ num_outputs"),
                         "num_inputs": r.uint(ULONG, what="fc_ num_inputs")}
    params = r.tensor("fc_ params")
    w, b = r.alias_tensor("fc_ weights"), r.alias_tensor("fc_ biases")
    f["bias_mode"] = "no_bias" if r.int(INT, what="fc_ bias_mode") == 1 else "bias"
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        f[key] = r.float(f"fc_ {key}")
    f["use_bias"] = r.bool("fc_ use_bias") if version == "fc_3" else True
    has_bias = f["bias_mode"] == "bias" and f["use_bias"] and math.prod(b) > 0
    views = _split(params, [w] + ([b] if has_bias else []), r, "fc_")
    f["weights"] = views[0].reshape(w[0], w[1])  # (num_inputs, num_outputs): y = x @ W
    f["bias"] = views[1].reshape(-1) if has_bias else None
    return f


def _read_relu(r: Reader, version: str) -> Dict[str, Any]:
    return {"disabled": r.bool("relu_ disabled") if version == "relu_2" else False}


def _read_input(r: Reader, version: str) -> Dict[str, Any]:
    f = {"avg": (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))}
    if version == "input_rgb_image_sized":
        f["nr"], f["nc"] = r.uint(ULONG, what="input nr"), r.uint(ULONG, what="input nc")
    return f


def _read_loss_metric(r: Reader, version: str) -> Dict[str, Any]:
    if version == "loss_metric_":
        return {"margin": 0.1, "dist_thresh": 0.75}  # older files: dlib's hard-coded values
    return {"margin": r.float("margin"), "dist_thresh": r.float("dist_thresh")}


# version string -> (kind, detail reader)
_DETAILS = {
    "con_4": ("con", _read_con), "con_5": ("con", _read_con), "con_6": ("con", _read_con),
    "affine_": ("affine", _read_affine), "affine_2": ("affine", _read_affine),
    "relu_": ("relu", _read_relu), "relu_2": ("relu", _read_relu),
    "max_pool_2": ("max_pool", _read_pool), "avg_pool_2": ("avg_pool", _read_pool),
    "add_prev_": ("add_prev", lambda r, v: {}),
    "fc_2": ("fc", _read_fc), "fc_3": ("fc", _read_fc),
}
_INPUTS = {"input_rgb_image_sized": _read_input, "input_rgb_image": _read_input}
_LOSSES = {"loss_metric_": _read_loss_metric, "loss_metric_2": _read_loss_metric}


def _read_details(r: Reader) -> Layer:
    version = r.string("layer version")
    if version not in _DETAILS:
        hint = " (batch-norm layers are not supported; dlib nets ship with affine_)" \
            if version.startswith("bn_") else ""
        raise r.fail(f"unsupported layer record {version!r}{hint}")
    kind, read = _DETAILS[version]
    return Layer(kind, version, read(r, version))


def _skip_trailing_state(r: Reader, version: int, above_input: bool) -> None:
    """add_layer's training state after the details: three bools and scratch tensors."""
    for what in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.bool(f"add_layer {what}")
    r.tensor("add_layer x_grad")
    r.tensor("add_layer cached_output")
    if above_input:
        r.tensor("add_layer grad_final")
        if version >= 3:
            r.uint(UINT, what="add_layer sample_expansion_factor")
    elif version == 2:
        r.tensor("add_layer params_grad")


def read_network(data: bytes, name: str = "stream") -> Tuple[Layer, List[Layer]]:
    """Parse a serialized ``add_loss_layer`` network.

    Returns ``(loss, layers)`` with ``layers`` in forward order: the input layer first, then
    one :class:`Layer` per ``add_layer`` (kinds ``con``, ``affine``, ``relu``, ``max_pool``,
    ``avg_pool``, ``add_prev``, ``fc``) and ``tag_or_skip`` for each tag/skip wrapper.
    """
    r = Reader(data, name)
    r.expect_int(1, "add_loss_layer version")
    version = r.string("loss version")
    if version not in _LOSSES:
        raise r.fail(f"unsupported loss layer {version!r}")
    loss = Layer("loss", version, _LOSSES[version](r, version))

    # Walk down the wrappers (outermost first) until the input layer appears.
    stack: List[Tuple[str, int]] = []
    while True:
        v = r.int(INT, what="layer wrapper version")
        nxt = r.peek_string()
        if nxt is not None and nxt.startswith("input"):
            if v not in (2, 3):
                raise r.fail(f"unsupported wrapper version {v} directly above the input layer")
            stack.append(("above_input", v))
            break
        if v == 1:
            stack.append(("tag_or_skip", v))
        elif v == 2:
            stack.append(("add_layer", v))
        else:
            raise r.fail(f"unexpected layer wrapper version {v}")
        if len(stack) > 10000:
            raise r.fail("network nesting is implausibly deep")

    in_version = r.string("input layer version")
    if in_version not in _INPUTS:
        raise r.fail(f"unsupported input layer {in_version!r}")
    layers = [Layer("input", in_version, _INPUTS[in_version](r, in_version))]

    # Unwind: each add_layer's details follow its subnet, so they arrive input-first.
    for wrapper, v in reversed(stack):
        if wrapper == "tag_or_skip":
            layers.append(Layer("tag_or_skip"))
            continue
        layers.append(_read_details(r))
        _skip_trailing_state(r, v, above_input=(wrapper == "above_input"))

    if not r.at_end():
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return loss, layers


def read_network_file(path) -> Tuple[Layer, List[Layer]]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FacebenchError(f"cannot read dlib model {path}: {e.strerror}") from None
    if data[:3] == b"BZh":
        raise FacebenchError(f"{path} is bzip2-compressed; decompress it first (bunzip2)")
    return read_network(data, name=str(path))


__all__ = ["DlibFormatError", "Layer", "Reader", "encode_int", "read_network",
           "read_network_file"]
